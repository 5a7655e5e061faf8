"""The demo's other parties: a back-end service (paho-mqtt, MQTT 5) and an impostor server.

The service is a real third-party MQTT 5 client over mutual TLS with a service certificate,
so the attribution the gateway adds (``tether-sender``) is seen as any application sees it.
The impostor is a plain TLS server on loopback with a certificate from a CA the device does
not pin: a man in the middle as the device meets one.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import TetherError

TIMEOUT_S = 10.0


class ServiceClientError(TetherError):
    """The demo's service client could not connect, subscribe or publish in time."""

    code = "demo_service_failed"


@dataclass(frozen=True)
class ServiceMessage:
    """A message the service received: topic, payload and MQTT 5 user properties."""

    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]


class ServiceClient:
    """A paho-mqtt v2 MQTT 5 client with a service certificate, trusting only the pinned CA."""

    def __init__(self, name: str, *, certificate: Path, key: Path, pinned_ca: Path) -> None:
        # paho is imported here: it is needed only by the demo's service stand-in.
        try:
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise ServiceClientError(
                "the demo's service needs paho-mqtt: pip install 'paho-mqtt>=2.0'",
                code="demo_paho_missing",
            ) from None

        self.name = name
        self.messages: queue.Queue[ServiceMessage] = queue.Queue()
        self._connack: queue.Queue[Any] = queue.Queue()
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=name,
            protocol=paho.MQTTv5,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(pinned_ca))
        context.load_cert_chain(str(certificate), str(key))
        self._client.tls_set_context(context)
        self._client.on_connect = lambda _c, _u, _f, reason, _p: self._connack.put(reason)
        self._client.on_subscribe = lambda _c, _u, _m, codes, _p: self._subacks.put(codes)
        self._client.on_message = lambda _c, _u, message: self.messages.put(
            ServiceMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                user_properties=tuple(
                    (str(k), str(v))
                    for k, v in getattr(message.properties, "UserProperty", []) or []
                ),
            )
        )
        self._started = False

    def connect(self, host: str, port: int, timeout: float = TIMEOUT_S) -> str:
        """Connect and return the CONNACK reason name; a failure is ``demo_service_failed``."""
        try:
            self._client.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise ServiceClientError(f"the service could not connect: {exc}") from exc
        self._client.loop_start()
        self._started = True
        reason = self._take(self._connack, timeout, "CONNACK")
        if reason.is_failure:
            raise ServiceClientError(f"the cloud refused the service: {reason}")
        return str(reason)

    def subscribe(self, topic_filter: str, timeout: float = TIMEOUT_S) -> str:
        """Subscribe at QoS 1; returns the granted reason; a refusal is an error."""
        self._client.subscribe(topic_filter, qos=1)
        codes = self._take(self._subacks, timeout, "SUBACK")
        if not codes or any(code.is_failure for code in codes):
            raise ServiceClientError(f"the cloud refused the subscription: {codes}")
        return ", ".join(str(code) for code in codes)

    def publish(self, topic: str, payload: bytes, timeout: float = TIMEOUT_S) -> None:
        """Publish at QoS 1 and wait until it was sent and acknowledged."""
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise ServiceClientError(f"the publish to {topic!r} was not acknowledged in time")

    def receive(self, timeout: float = TIMEOUT_S) -> ServiceMessage:
        """The next message the service received."""
        return self._take(self.messages, timeout, "message")

    @staticmethod
    def _take(source: queue.Queue[Any], timeout: float, what: str) -> Any:
        try:
            return source.get(timeout=timeout)
        except queue.Empty:
            raise ServiceClientError(f"no {what} within {timeout:g} s") from None

    def close(self) -> None:
        """Disconnect and stop paho's network thread."""
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False


class ImpostorServer:
    """A TLS server on 127.0.0.1 (port 0) presenting a certificate the device must refuse.

    Each connection gets a handshake attempt and is then held until the peer leaves or a
    short timeout ends it; ``close`` stops accepting and waits for the threads.
    """

    def __init__(self, certificate_chain: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(certificate_chain), str(key))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.handshakes: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="demo-impostor", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(3.0)
        try:
            with self._context.wrap_socket(connection, server_side=True) as tls:
                self.handshakes.put("completed")
                with contextlib.suppress(OSError):
                    tls.recv(1024)
        except (OSError, ssl.SSLError) as exc:
            self.handshakes.put(f"refused by the client ({type(exc).__name__})")
        finally:
            connection.close()

    def close(self) -> None:
        """Stop accepting and wait (bounded) for the connection threads."""
        self._stop.set()
        self._listener.close()
        self._acceptor.join(2)
        for worker in self._threads:
            worker.join(4)
