"""Enrollment over MQTT 5: the gateway's handler for the reserved ``$tether/`` topics.

A device publishes a request and gets the answer on the Response Topic it named, with its
Correlation Data, written to its own session only (:mod:`tether.cloud.gateway.reserved`: no
subscription needed first, so nothing is lost to a subscribe-first race):

- ``$tether/enroll``: ``{"csr": "<PEM>", "serial": optional}``, authenticated by the birth
  certificate of the connection (factory or claim certificate);
- ``$tether/renew``: ``{"csr": "<PEM>"}``, authenticated by the current operational
  certificate (same key: ``renewed``; a new SE key: ``rotated``).

The answer is JSON: ``{"result": "enrolled"|"renewed"|"rotated", "serial", "certificate",
"chain", "replayed"}`` or ``{"result": "refused", "code", "message"}``; without a Response
Topic it goes to ``$tether/<request topic's last level>/reply``. A claim connection may publish
nothing else (the topic policy grants a claim identity nothing).

The handler also runs enrollment's clock: every ``tick`` seconds it retires certificates whose
overlap has ended (the feed then drops a session still using one) and pushes a server-side
"renew now" to connected devices: an audit row ``device.renew_requested`` (written by
:meth:`~tether.cloud.enrollment.admin.EnrollmentAdmin.request_renewal`, from any process)
becomes a message on ``devices/<serial>/tether/renew-now``, which the device agent subscribes
to. Bounds: at most ``max_in_flight`` requests are being served at once (beyond: refused with
``enrollment_busy``), request payloads over ``MAX_REQUEST`` bytes are refused, and the work
runs on ``threads`` threads of its own (``tether-enroll``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mqtt5 import DisconnectReasonCode

from tether.cloud.enrollment.service import EnrollmentService, EnrollOutcome, EnrollResult
from tether.cloud.gateway.broker import Broker, Message
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.reserved import RESERVED_PREFIX, ReservedClient
from tether.errors import InvalidInputError, TetherError

log = logging.getLogger("tether.enrollment")

ENROLL_TOPIC = RESERVED_PREFIX + "enroll"
RENEW_TOPIC = RESERVED_PREFIX + "renew"
RENEW_NOW_LEVEL = "tether/renew-now"  # under devices/<serial>/
RENEW_REQUESTED = "device.renew_requested"
MAX_REQUEST = 16 * 1024
CLOUD = Identity(
    kind=IdentityKind.SERVICE, name="tether", certificate_fingerprint="", issuer="tether"
)


class BadEnrollRequestError(InvalidInputError):
    """The request payload is not the JSON object this topic expects."""

    code = "enrollment_bad_request"


def _request(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_REQUEST:
        raise BadEnrollRequestError(f"the request is larger than {MAX_REQUEST} bytes")
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("csr"), str):
        raise BadEnrollRequestError(
            'the request must be a JSON object {"csr": "<PEM CSR>"} (serial optional)'
        )
    serial = value.get("serial")
    if serial is not None and not isinstance(serial, str):
        raise BadEnrollRequestError("serial must be a string")
    return value


def _answer(outcome: EnrollOutcome) -> dict[str, Any]:
    return {
        "result": outcome.result.value,
        "serial": outcome.serial,
        "certificate": outcome.certificate_pem,
        "chain": outcome.chain_pem,
        "replayed": outcome.replayed,
        "attributes": dict(outcome.attributes),
    }


class MqttEnrollment:
    """``ReservedTopics`` for enrollment and renewal; attach with :meth:`attach`."""

    def __init__(
        self,
        enrollment: EnrollmentService,
        *,
        max_in_flight: int = 64,
        threads: int = 16,
        tick: float = 1.0,
    ) -> None:
        self.enrollment = enrollment
        self.max_in_flight = max_in_flight
        self.tick = tick
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="tether-enroll")
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock: asyncio.Task[None] | None = None
        self._broker: Broker | None = None
        self._audit_position = 0

    def attach(self, broker: Broker) -> None:
        """Answer ``$tether/`` publishes on this gateway's broker; start the clock task."""
        broker.reserved = self
        self._broker = broker
        self._audit_position = self.enrollment.registry.last_audit_id()
        self._clock = asyncio.get_running_loop().create_task(self._run_clock())

    async def close(self) -> None:
        """Stop the clock and the enrollment threads (requests in flight are dropped)."""
        if self._broker is not None and self._broker.reserved is self:
            self._broker.reserved = None
        for task in [self._clock, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- ReservedTopics --------------------------------------------------------------------

    def handle(self, client: ReservedClient, message: Message) -> bool:
        """Accept ``$tether/enroll`` and ``$tether/renew``; anything else is refused."""
        if message.topic not in (ENROLL_TOPIC, RENEW_TOPIC):
            return False
        reply_topic = message.response_topic or f"{message.topic}/reply"
        if self._in_flight >= self.max_in_flight:
            self._send(client, message, reply_topic, self._refused("enrollment_busy", (
                f"{self._in_flight} enrollments are being served; retry in a moment"
            )))  # fmt: skip
            return True
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._serve(client, message, reply_topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _serve(self, client: ReservedClient, message: Message, reply_topic: str) -> None:
        identity = client.identity
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._work, identity, message
            )
        finally:
            self._in_flight -= 1
        self._send(client, message, reply_topic, answer)
        if (
            answer.get("result") == EnrollResult.ENROLLED.value
            and identity.issuer_fingerprint != self.enrollment.ca_fingerprint
        ):
            # The serial belongs to the operational CA now: this birth session ends here,
            # after its reply (a retry within the overlap may reconnect enroll-only).
            client.disconnect(
                DisconnectReasonCode.ADMINISTRATIVE_ACTION,
                "enrolled: connect with the operational certificate",
            )

    def _work(self, identity: Identity, message: Message) -> dict[str, Any]:
        try:
            request = _request(message.payload)
            csr = request["csr"].encode("utf-8")
            if message.topic == RENEW_TOPIC:
                outcome = self.enrollment.renew(csr, identity)
            else:
                credential = self.enrollment.credential_for(identity)
                outcome = self.enrollment.enroll(csr, credential, serial=request.get("serial"))
        except TetherError as error:
            log.warning(
                "[%s] %s by %r refused: %s", error.code, message.topic, identity.name,
                error.message, extra={"tether_code": error.code, "identity": identity.name},
            )  # fmt: skip
            return self._refused(error.code, error.message)
        log.info(
            "[enrollment_%s] %s over MQTT (%s)",
            outcome.result.value,
            outcome.serial,
            "retry" if outcome.replayed else "new",
            extra={"tether_code": f"enrollment_{outcome.result.value}", "identity": identity.name},
        )
        return _answer(outcome)

    @staticmethod
    def _refused(code: str, text: str) -> dict[str, Any]:
        return {"result": "refused", "code": code, "message": text}

    @staticmethod
    def _send(client: ReservedClient, request: Message, topic: str, answer: dict[str, Any]) -> None:
        client.deliver(
            Message(
                topic=topic,
                payload=json.dumps(answer).encode("utf-8"),
                qos=max(request.qos, 0),
                sender=CLOUD,
                payload_format_indicator=1,
                content_type="application/json",
                correlation_data=request.correlation_data,
            ),
            max(request.qos, 0),
        )

    # -- the clock: retirement after the overlap, server-side "renew now" ------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            try:
                await loop.run_in_executor(self._threads, self.enrollment.retire_due)
                serials = await loop.run_in_executor(self._threads, self._renew_requests)
            except TetherError as exc:
                log.error("enrollment clock failed (%s): %s", exc.code, exc.message)
                continue
            for serial in serials:
                self.push_renew_now(serial)

    def _renew_requests(self) -> list[str]:
        entries = self.enrollment.registry.audit_after(self._audit_position)
        if entries:
            self._audit_position = entries[-1].id
        return [e.target for e in entries if e.action == RENEW_REQUESTED]

    def push_renew_now(self, serial: str) -> int:
        """Tell a connected device to renew now; returns how many sessions got it.

        Every gateway worker reads the request from the audit log and tells its own sessions
        (``publish_here``), so the device gets it once whichever worker holds its session.
        """
        if self._broker is None:
            return 0
        message = Message(
            topic=f"devices/{serial}/{RENEW_NOW_LEVEL}", payload=b"{}", qos=1, sender=CLOUD
        )
        return self._broker.publish_here(message)
