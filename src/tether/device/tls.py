"""The device's mutual-TLS context for awscrt: one builder, pinned to one CA.

In the spirit of aws-iot-device-sdk-python-v2's mTLS builders: a certificate plus a key
source (a file or a PKCS#11 token) plus the pinned CA, and nothing from the system trust
store. awscrt's errors become ``TetherError`` subclasses a person can act on.
"""

from __future__ import annotations

from awscrt import io
from awscrt.exceptions import AwsCrtError
from cryptography.hazmat.primitives import serialization

from tether.device.config import (
    CloudEndpoint,
    DeviceIdentity,
    FileKey,
    load_trust_anchors,
    read_small_file,
)
from tether.device.errors import ConnectionFailedError
from tether.device.keys import check_key
from tether.secure_element.errors import Pkcs11ModuleError, TokenOperationError, WrongPinError


def _tls_options(identity: DeviceIdentity, endpoint: CloudEndpoint) -> io.TlsContextOptions:
    anchors = load_trust_anchors(endpoint.pinned_ca)
    key = identity.key
    if isinstance(key, FileKey):
        options = io.TlsContextOptions.create_client_with_mtls_from_path(
            str(identity.certificate), str(key.path)
        )
    else:
        try:
            lib = io.Pkcs11Lib(file=key.module)
        except (AwsCrtError, RuntimeError) as exc:
            raise Pkcs11ModuleError(
                f"awscrt cannot load the PKCS#11 module {key.module}: {exc}; check --pkcs11-module"
            ) from exc
        options = io.TlsContextOptions.create_client_with_mtls_pkcs11(
            pkcs11_lib=lib,
            user_pin=key.pin,
            token_label=key.token_label,
            private_key_label=key.key_label,
            cert_file_contents=read_small_file(identity.certificate, "device certificate"),
        )
    # The whole trust store is the pinned server CA: the system store is never consulted.
    # s2n accepts an intermediate as a trust anchor, so a chain through any other issuing CA
    # of the same root fails here.
    options.override_default_trust_store(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in anchors)
    )
    options.min_tls_ver = io.TlsVersion.TLSv1_2
    options.verify_peer = True
    return options


def client_context(identity: DeviceIdentity, endpoint: CloudEndpoint) -> io.ClientTlsContext:
    """The context of ``build_tls_context`` without the key check (the caller made it)."""
    options = _tls_options(identity, endpoint)
    try:
        return io.ClientTlsContext(options)
    except AwsCrtError as exc:
        if "PIN_INCORRECT" in exc.name:
            raise WrongPinError(
                "the token refused the PIN (awscrt login): check the token's user PIN"
            ) from exc
        if "PKCS11" in exc.name:
            raise TokenOperationError(
                f"awscrt could not use the token: {exc.name}; check the token with pkcs11-tool"
            ) from exc
        raise ConnectionFailedError(
            f"awscrt refused the TLS settings: {exc.name} ({exc.message}); check the "
            "certificate, key and pinned CA files"
        ) from exc


def build_tls_context(identity: DeviceIdentity, endpoint: CloudEndpoint) -> io.ClientTlsContext:
    """The mutual-TLS context for ``identity`` talking to ``endpoint``.

    Checks first that the key belongs to the certificate (signing a challenge in the token for
    a PKCS#11 key), so a wrong PIN or a mismatched key is a clear error, not a TLS failure.
    Trust is the pinned CA only. TLS 1.2 is the floor; awscrt offers 1.3 with a key file.
    """
    check_key(identity)
    return client_context(identity, endpoint)
