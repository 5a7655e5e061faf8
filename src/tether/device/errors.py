"""Errors of the device agent, each under a category of ``tether.errors``.

The ``code`` strings are stable; scripts and the CLI match on them.
"""

from __future__ import annotations

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SecureElementError,
    TetherError,
)


class DeviceFileNotFoundError(NotFoundError):
    """A certificate, key or pinned CA file does not exist or cannot be read."""

    code = "file_not_found"


class BadCertificateError(InvalidInputError):
    """A certificate file is not a PEM/DER X.509 certificate Tether can use."""

    code = "bad_certificate"


class BadKeyFileError(InvalidInputError):
    """A key file is not an unencrypted PEM/DER ECDSA P-256 private key."""

    code = "bad_key_file"


class KeyCertificateMismatchError(InvalidInputError):
    """The private key does not belong to the device certificate."""

    code = "key_certificate_mismatch"


class ServerNotTrustedError(PermissionDeniedError):
    """The server's certificate does not chain to the pinned CA (or names another host)."""

    code = "server_not_trusted"


class ConnectionRefusedByCloudError(PermissionDeniedError):
    """The cloud answered the MQTT CONNECT with a failure reason code."""

    code = "connection_refused"


class ConnectionFailedError(TetherError):
    """The TCP or TLS connection failed for a reason other than trust (nothing listening, reset)."""

    code = "connection_failed"


class DeviceTimeoutError(TetherError):
    """The cloud did not answer within the timeout."""

    code = "timeout"


class NotConnectedError(ConfigurationError):
    """An operation that needs a live connection was called before ``connect()`` or after close."""

    code = "not_connected"


class PublishRejectedError(PermissionDeniedError):
    """The cloud answered a QoS 1 PUBLISH with a failure reason code."""

    code = "publish_rejected"


class SubscribeRejectedError(PermissionDeniedError):
    """The cloud refused a subscription (SUBACK failure reason code)."""

    code = "subscribe_rejected"


class Pkcs11ModuleError(ConfigurationError):
    """The PKCS#11 module cannot be loaded."""

    code = "pkcs11_module_error"


class Pkcs11TokenNotFoundError(NotFoundError):
    """No token (or more than one) carries the given label."""

    code = "pkcs11_token_not_found"


class Pkcs11KeyNotFoundError(NotFoundError):
    """The token has no private key (or more than one) with the given label."""

    code = "pkcs11_key_not_found"


class Pkcs11WrongPinError(AuthenticationError):
    """The token refused the user PIN."""

    code = "pkcs11_wrong_pin"


class Pkcs11OperationError(SecureElementError):
    """The token failed an operation (login, sign, attribute read) for another reason."""

    code = "pkcs11_error"
