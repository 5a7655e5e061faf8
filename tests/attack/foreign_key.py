"""A client that presents a real certificate but signs the handshake with another key.

stdlib ``ssl``, OpenSSL's ``s_client`` and s2n with a key file all refuse to load a key that
does not match the certificate, so the attack needs a key they cannot inspect: a PKCS#11 key.
awscrt (s2n) then sends the registered device's certificate and a CertificateVerify made by an
unrelated key in a SoftHSM2 token, exactly what a thief with a copied certificate could do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from awscrt import io, mqtt5


@dataclass(frozen=True)
class ForeignKey:
    """Where the unrelated key lives."""

    module: str
    token_label: str
    pin: str
    key_label: str


def connect_with_foreign_key(
    port: int, certificate_pem: bytes, pinned_ca_pem: bytes, key: ForeignKey, client_id: str
) -> str:
    """Connect over mutual TLS + MQTT 5; return what happened in words (never raises).

    The result starts with ``connected`` only if the gateway accepted the connection.
    """
    options = io.TlsContextOptions.create_client_with_mtls_pkcs11(
        pkcs11_lib=io.Pkcs11Lib(file=key.module),
        user_pin=key.pin,
        token_label=key.token_label,
        private_key_label=key.key_label,
        cert_file_contents=certificate_pem,
    )
    options.override_default_trust_store(pinned_ca_pem)
    options.min_tls_ver = io.TlsVersion.TLSv1_2
    outcome: list[str] = []
    done = threading.Event()

    def on_success(_data: mqtt5.LifecycleConnectSuccessData) -> None:
        if not done.is_set():
            outcome.append("connected")
            done.set()

    def on_failure(data: mqtt5.LifecycleConnectFailureData) -> None:
        if not done.is_set():
            name = getattr(data.exception, "name", type(data.exception).__name__)
            outcome.append(f"connection failed ({name})")
            done.set()

    client = mqtt5.Client(
        mqtt5.ClientOptions(
            host_name="127.0.0.1",
            port=port,
            tls_ctx=io.ClientTlsContext(options),
            connect_options=mqtt5.ConnectPacket(client_id=client_id),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            connack_timeout_ms=5000,
            on_lifecycle_event_connection_success_fn=on_success,
            on_lifecycle_event_connection_failure_fn=on_failure,
            disable_metrics=True,
        )
    )
    client.start()
    try:
        if not done.wait(20):
            return "no outcome within 20 s"
        return outcome[0]
    finally:
        client.stop()
