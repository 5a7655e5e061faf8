"""The device's MQTT 5 connection: awscrt over mutual TLS, pinned to one CA, with a sync API.

``DeviceClient`` wraps awscrt's callback-based MQTT 5 client in blocking calls with timeouts
and turns every failure into a ``TetherError``; its TLS context comes from
``tether.device.tls`` (the one mTLS builder). The client stays one class: its callbacks,
queues and futures share one lifecycle lock, and splitting them would spread that lock over
modules.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

from awscrt import io, mqtt5
from awscrt.exceptions import AwsCrtError

from tether.device.advice import connack_advice
from tether.device.config import (
    CloudEndpoint,
    DeviceIdentity,
)
from tether.device.errors import (
    ConnectionFailedError,
    ConnectionRefusedByCloudError,
    DeviceTimeoutError,
    NotConnectedError,
    PublishRejectedError,
    SubscribeRejectedError,
)
from tether.device.keys import KeyFacts, check_key
from tether.device.preflight import probe_server
from tether.device.tls import client_context
from tether.errors import InvalidInputError, TetherError

DEFAULT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
FAILED_STOP_WAIT_S = 0.5
DIAGNOSE_AFTER_S = 1.0  # loopback connects take ~50 ms; a real network rarely more than this
MAX_QUEUED_MESSAGES = 1000


@dataclass(frozen=True)
class ConnectResult:
    """The cloud's verdict: CONNACK reason code and the settings it assigned or negotiated."""

    reason_code: int
    reason_name: str
    client_id: str
    session_present: bool
    properties: dict[str, str]


@dataclass(frozen=True)
class PubAckResult:
    """The PUBACK of a QoS 1 publish (for QoS 0 the reason is ``SUCCESS`` with no ack)."""

    reason_code: int
    reason_name: str
    reason_string: str | None


@dataclass(frozen=True)
class SubAckResult:
    """The granted QoS (or failure) per filter, as SUBACK reason names."""

    reason_codes: tuple[int, ...]
    reason_names: tuple[str, ...]


@dataclass(frozen=True)
class ReceivedMessage:
    """An incoming PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class DeviceClient:
    """A device connected to the cloud over MQTT 5: connect, publish, subscribe, receive.

    The MQTT client id is ``identity.serial`` (the certificate's CN). Calls block with a
    timeout; callbacks from awscrt's threads only feed events and the message queue. Use as a
    context manager, or call ``disconnect()``: it stops the client and waits until awscrt says
    it has stopped, so no thread outlives the client.
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        endpoint: CloudEndpoint,
        *,
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        if endpoint.server_name not in (None, endpoint.host):
            # awscrt's MQTT 5 client checks the certificate against the host it dials and
            # has no separate server-name option; refusing is better than checking silently
            # against another name than the caller asked for.
            raise InvalidInputError(
                f"the device agent checks the server certificate against the host it dials "
                f"({endpoint.host}); server name {endpoint.server_name!r} differs: dial that "
                "name instead",
                code="server_name_unsupported",
            )
        self.identity = identity
        self.endpoint = endpoint
        self.messages: queue.Queue[ReceivedMessage] = queue.Queue(MAX_QUEUED_MESSAGES)
        self.key_facts: KeyFacts | None = None
        self._on_message = on_message
        self._client: mqtt5.Client | None = None
        self._connected = False
        self._started = False
        self._outcome: Future[mqtt5.LifecycleConnectSuccessData] = Future()
        self._stopped = threading.Event()

    # awscrt callbacks (event-loop thread) -------------------------------------------------

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        if not self._outcome.done():
            self._outcome.set_result(data)

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        if not self._outcome.done():
            self._outcome.set_exception(_ConnectFailure(data))

    def _on_stopped(self, _data: mqtt5.LifecycleStoppedData) -> None:
        self._stopped.set()

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        packet = data.publish_packet
        payload = packet.payload
        message = ReceivedMessage(
            topic=packet.topic,
            payload=bytes(payload) if payload is not None else b"",
            qos=int(packet.qos),
            retain=bool(packet.retain),
        )
        if self._on_message is not None:
            self._on_message(message)
        try:
            self.messages.put_nowait(message)
        except queue.Full:  # a slow reader loses the oldest news, never blocks awscrt
            self.messages.get_nowait()
            self.messages.put_nowait(message)

    # public API ---------------------------------------------------------------------------

    def connect(self, timeout: float = DEFAULT_TIMEOUT_S) -> ConnectResult:
        """Open the mutual-TLS connection and send CONNECT; return the CONNACK verdict.

        Raises ``server_not_trusted`` when the server's chain does not lead to the pinned CA
        (diagnosed by a stdlib pre-flight with the same trust, since awscrt only reports a
        negotiation failure), ``connection_refused`` for a CONNACK failure code,
        ``timeout``, ``connection_failed``, and the key errors of ``check_key``.
        """
        if self._started:
            raise NotConnectedError("this client already connected once: make a new DeviceClient")
        self._started = True
        self.key_facts = check_key(self.identity)
        tls = client_context(self.identity, self.endpoint)
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = max(1, int(timeout * 1000))
        self._client = mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=self.endpoint.host,
                port=self.endpoint.port,
                tls_ctx=tls,
                socket_options=socket_options,
                connect_options=mqtt5.ConnectPacket(client_id=self.identity.serial),
                session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
                connack_timeout_ms=max(1, int(timeout * 1000)),
                ack_timeout_sec=max(1, int(timeout)),
                on_publish_callback_fn=self._on_publish,
                on_lifecycle_event_stopped_fn=self._on_stopped,
                on_lifecycle_event_connection_success_fn=self._on_success,
                on_lifecycle_event_connection_failure_fn=self._on_failure,
                disable_metrics=True,  # metrics would rewrite the MQTT username
            )
        )
        self._client.start()
        deadline = time.monotonic() + timeout
        try:
            try:
                success = self._outcome.result(min(timeout, DIAGNOSE_AFTER_S))
            except FutureTimeoutError:
                # s2n delays closing a failed handshake by 10-30 s ("blinding"), so awscrt
                # reports an untrusted server late. A probe with the same pinned CA says why
                # at once; a trusted server just means the connect is slow: keep waiting.
                self._diagnose_slow_connect(max(0.1, deadline - time.monotonic()))
                success = self._outcome.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError as exc:
            self._stop()
            raise DeviceTimeoutError(
                f"no CONNACK from {self.endpoint.host}:{self.endpoint.port} within {timeout:g} s"
            ) from exc
        except _ConnectFailure as failure:
            self._stop()
            raise self._explain_failure(failure.data, timeout) from None
        except TetherError:
            # After a refused handshake awscrt reports "stopped" only when s2n's blinding
            # delay (10-30 s) ends, on its own event-loop threads; do not block that long.
            self._stop(wait=FAILED_STOP_WAIT_S)
            raise
        self._connected = True
        return _connect_result(success, self.identity.serial)

    def _diagnose_slow_connect(self, timeout: float) -> None:
        """Raise ``server_not_trusted`` if a pinned-CA probe refuses the server; else return."""
        if self._outcome.done():
            return
        facts = probe_server(self.identity, self.endpoint, timeout)
        if facts.verify_error is not None and not self._outcome.done():
            facts.require_trusted(self.endpoint)

    def _explain_failure(
        self, data: mqtt5.LifecycleConnectFailureData, timeout: float
    ) -> Exception:
        connack = data.connack_packet
        if connack is not None and connack.reason_code not in (
            None,
            mqtt5.ConnectReasonCode.SUCCESS,
        ):
            code = mqtt5.ConnectReasonCode(connack.reason_code)
            advice = connack_advice(code, connack.reason_string)
            detail = f" ({connack.reason_string})" if connack.reason_string else ""
            return ConnectionRefusedByCloudError(
                f"the cloud refused the connection: CONNACK {code.name} ({int(code)}){detail}; "
                f"{advice}"
            )
        exc = data.exception
        name = getattr(exc, "name", type(exc).__name__)
        if "TLS" in name:
            # awscrt says only "negotiation failed": ask a probe with the same trust why.
            facts = probe_server(self.identity, self.endpoint, timeout)
            facts.require_trusted(self.endpoint)
            return ConnectionRefusedByCloudError(
                f"the TLS handshake failed ({name}) after the server proved itself: the cloud "
                "refused the device certificate (unregistered CA, revoked, or not a client "
                "certificate); ask the fleet operator",
                code="device_certificate_rejected",
            )
        return ConnectionFailedError(
            f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}; "
            "check --host and --port and that the cloud is running"
        )

    def _require_client(self) -> mqtt5.Client:
        if self._client is None or not self._connected:
            raise NotConnectedError("not connected: call connect() first")
        return self._client

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = DEFAULT_TIMEOUT_S
    ) -> PubAckResult:
        """Publish and, for QoS 1, wait for the PUBACK; a failure reason is ``publish_rejected``."""
        client = self._require_client()
        if qos not in (0, 1):
            raise InvalidInputError(f"QoS {qos} is not supported: use 0 or 1")
        data = payload.encode() if isinstance(payload, str) else payload
        future = client.publish(mqtt5.PublishPacket(topic=topic, payload=data, qos=mqtt5.QoS(qos)))
        completion = _wait(future, timeout, f"PUBACK for {topic!r}")
        puback = completion.puback
        if qos == 0 or puback is None or puback.reason_code is None:
            return PubAckResult(0, "SUCCESS", None)
        code = mqtt5.PubackReasonCode(puback.reason_code)
        if int(code) >= 0x80:
            raise PublishRejectedError(
                f"the cloud refused the publish to {topic!r}: PUBACK {code.name} ({int(code)})"
                + (f" ({puback.reason_string})" if puback.reason_string else "")
                + "; check the device's topic policy"
            )
        return PubAckResult(int(code), code.name, puback.reason_string)

    def request(
        self, topic: str, payload: bytes, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> ReceivedMessage:
        """MQTT 5 request/response: publish with a fresh Response Topic and Correlation Data
        and wait for the reply (the cloud answers ``$tether/`` requests on the session, so no
        subscription is needed first). Other messages that arrive meanwhile are kept."""
        client = self._require_client()
        tag = secrets.token_hex(8)
        reply_topic = f"$tether/reply/{tag}"
        future = client.publish(
            mqtt5.PublishPacket(
                topic=topic,
                payload=payload,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                response_topic=reply_topic,
                correlation_data=tag.encode(),
            )
        )
        _wait(future, timeout, f"PUBACK for {topic!r}")
        deadline = time.monotonic() + timeout
        others: list[ReceivedMessage] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceTimeoutError(f"no reply to {topic!r} within {timeout:g} s")
                message = self.receive(left)
                if message.topic == reply_topic:
                    return message
                others.append(message)
        finally:
            for message in others:
                with contextlib.suppress(queue.Full):
                    self.messages.put_nowait(message)

    def subscribe(
        self, topic_filter: str, qos: int = 1, timeout: float = DEFAULT_TIMEOUT_S
    ) -> SubAckResult:
        """Subscribe and wait for the SUBACK; received messages land in ``messages``."""
        client = self._require_client()
        future = client.subscribe(
            mqtt5.SubscribePacket(
                subscriptions=[mqtt5.Subscription(topic_filter=topic_filter, qos=mqtt5.QoS(qos))]
            )
        )
        suback = _wait(future, timeout, f"SUBACK for {topic_filter!r}")
        codes = [mqtt5.SubackReasonCode(c) for c in suback.reason_codes or ()]
        if not codes or any(int(c) >= 0x80 for c in codes):
            names = ", ".join(c.name for c in codes) or "no reason code"
            raise SubscribeRejectedError(
                f"the cloud refused the subscription to {topic_filter!r}: SUBACK {names}; "
                "check the device's topic policy"
            )
        return SubAckResult(tuple(int(c) for c in codes), tuple(c.name for c in codes))

    def receive(self, timeout: float = DEFAULT_TIMEOUT_S) -> ReceivedMessage:
        """The next received message; ``timeout`` if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty as exc:
            raise DeviceTimeoutError(f"no message arrived within {timeout:g} s") from exc

    def _stop(self, wait: float = STOP_TIMEOUT_S) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is None:
            return
        client.stop()
        self._stopped.wait(wait)

    def disconnect(self) -> None:
        """Send DISCONNECT, stop the client and wait until awscrt reports it stopped."""
        self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()


T = TypeVar("T")


class _ConnectFailure(Exception):
    """Carries awscrt's failure data through the outcome future."""

    def __init__(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        super().__init__("connection failure")
        self.data = data


def _wait(future: Future[T], timeout: float, what: str) -> T:
    try:
        return future.result(timeout)
    except FutureTimeoutError as exc:
        raise DeviceTimeoutError(f"no {what} within {timeout:g} s") from exc
    except AwsCrtError as exc:
        raise ConnectionFailedError(f"waiting for the {what} failed: {exc}") from exc


def _connect_result(data: mqtt5.LifecycleConnectSuccessData, serial: str) -> ConnectResult:
    connack = data.connack_packet
    settings = data.negotiated_settings
    properties: dict[str, str] = {}
    if connack.assigned_client_identifier:
        properties["assigned client id"] = connack.assigned_client_identifier
    for label, value in (
        ("maximum QoS", settings.maximum_qos),
        ("session expiry (s)", settings.session_expiry_interval_sec),
        ("receive maximum", settings.receive_maximum_from_server),
        ("maximum packet size", settings.maximum_packet_size_to_server),
        ("topic alias maximum", settings.topic_alias_maximum_to_server),
        ("server keep alive (s)", settings.server_keep_alive_sec),
        ("retain available", settings.retain_available),
        ("wildcard subscriptions", settings.wildcard_subscriptions_available),
        ("shared subscriptions", settings.shared_subscriptions_available),
    ):
        if value is not None:
            properties[label] = value.name if hasattr(value, "name") else str(value)
    if connack.reason_string:
        properties["reason string"] = connack.reason_string
    code = mqtt5.ConnectReasonCode(connack.reason_code or 0)
    return ConnectResult(
        reason_code=int(code),
        reason_name=code.name,
        client_id=settings.client_id or serial,
        session_present=bool(connack.session_present),
        properties=properties,
    )
