"""Errors of the device agent, each under a category of ``tether.errors``.

The ``code`` strings are stable; scripts and the CLI match on them. Token problems (module,
token, PIN, key label) are ``tether.secure_element.errors`` classes: the device reaches its
token through that package, and awscrt's own PKCS#11 failures are mapped onto the same codes.
"""

from __future__ import annotations

from tether.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
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
