"""The gateway's policy over the registry, and live sessions re-evaluated on a change.

:class:`LivePolicy` is the gateway's :class:`~tether.cloud.gateway.policy.TopicPolicy` in the
cloud service. It holds one :class:`~tether.cloud.policy.resolve.Resolver` built from a
registry snapshot (policies, attachments, device groups and attributes), read on the feed's
own thread when the service starts and again after every policy, group or attribute change
the change feed sees (:data:`POLICY_ACTIONS`), in whichever process it was made. Decisions are
then pure in-memory matching on the event loop.

After a reload every live session is re-evaluated at once (:func:`reevaluate`; a session
whose policies, groups and attributes did not change keeps what it has, since its decisions do
not change):

- it lost the ``connect`` right: DISCONNECT **0x87 Not authorized**, the reason string naming
  the policy and statement (the client's reconnect is refused with CONNACK 0x87 the same way);
  its Will is not published (the session may do nothing once it may not connect);
- a subscription it holds is no longer allowed (``subscribe`` or ``receive``): the
  subscription is removed at once and the session stays. MQTT 5 has no packet by which a
  server withdraws one subscription; disconnecting for it would make every narrowing edit
  reconnect the whole fleet it touches, and the refusal shows the next time the client
  subscribes (SUBACK 0x87). The gateway log names the filter, policy and statement;
- publishing is checked per PUBLISH, so a narrowed publish right refuses the very next one
  (PUBACK 0x87, or DISCONNECT 0x87 at QoS 0).

A reload that fails (the registry is unreachable) is logged (``policy_reload_failed``) and
retried every ``RETRY_INTERVAL`` until it works, on its own task: the feed itself goes on to
the next entry, so a revocation behind a policy change is never held up by it.

Scale: the snapshot holds the groups and attributes of every device that has any, in memory
in every gateway process, and is re-read whole on each change: fine for fleets of ~10^5 such
devices; beyond that, per-device reads at verdict time are the next step.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from mqtt5 import DisconnectReasonCode

from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.policy import DocumentPolicy
from tether.cloud.policy.document import Action
from tether.cloud.policy.evaluate import Subject
from tether.cloud.policy.resolve import Resolver
from tether.cloud.registry import AuditAction, AuditEntry
from tether.errors import TetherError

if TYPE_CHECKING:
    from tether.cloud.gateway import Gateway
    from tether.cloud.registry import Registry

log = logging.getLogger("tether.policy")

POLICY_ACTIONS = frozenset(
    {
        AuditAction.POLICY_PUT,
        AuditAction.POLICY_DELETE,
        AuditAction.POLICY_ATTACH,
        AuditAction.POLICY_DETACH,
        AuditAction.DEVICE_GROUP_ADD,
        AuditAction.DEVICE_GROUP_REMOVE,
        AuditAction.DEVICE_ATTRIBUTE,
    }
)
LOST_CONNECT = DisconnectReasonCode.NOT_AUTHORIZED
RETRY_INTERVAL = 1.0  # seconds between reload attempts after a failed one


class LivePolicy(DocumentPolicy):
    """Policies from the registry, reloaded by the change feed (see the module docstring).

    Until :meth:`load` has run every identity is refused (fail closed), so a quarantined
    device cannot slip in on the built-in default while the snapshot is read.
    """

    def __init__(self, registry: Registry, *, lane: Executor) -> None:
        super().__init__(self._subject)
        self._registry = registry
        self._lane = lane
        self._resolver: Resolver | None = None
        self._retry: asyncio.Task[None] | None = None

    def _subject(self, identity: Identity) -> Subject:
        if self._resolver is None:
            return Subject(identity.kind.value, identity.name)  # no policy: nothing allowed
        return self._resolver.subject(
            identity.kind.value, identity.name, identity.issuer_fingerprint
        )

    async def load(self) -> None:
        """Read the registry snapshot on the feed's lane and use it from now on."""
        loop = asyncio.get_running_loop()
        snapshot = await loop.run_in_executor(self._lane, self._registry.policy_snapshot)
        self._resolver = Resolver(snapshot)
        self.invalidate()

    async def on_audit_entry(self, entry: AuditEntry, gateway: Gateway) -> int:
        """The change feed's hook: after a policy change, reload and re-evaluate.

        Returns how many sessions were dropped (lost their connect right); any other entry
        costs nothing.
        """
        if entry.action not in POLICY_ACTIONS:
            return 0
        reason = f"{entry.action} {entry.target} by {entry.actor}"
        try:
            await self.load()
        except TetherError as exc:
            # The feed has moved past this entry and must go on (a revocation may follow):
            # retry the reload on our own until it works, never silently keep a stale policy.
            log.error(
                "cannot reload policies after %s (%s): %s; retrying every %.0f s",
                reason, exc.code, exc.message, RETRY_INTERVAL,
                extra={"tether_code": "policy_reload_failed"},
            )  # fmt: skip
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._retry_load(gateway, reason))
            return 0
        return await reevaluate(gateway, self, reason=reason)

    async def _retry_load(self, gateway: Gateway, reason: str) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            try:
                await self.load()
            except TetherError:
                continue
            await reevaluate(gateway, self, reason=f"{reason} (after a failed reload)")
            return


async def reevaluate(gateway: Gateway, policy: DocumentPolicy, *, reason: str) -> int:
    """Apply ``policy`` (already reloaded) to every live session; the sessions dropped.

    Subscriptions no longer allowed are removed; sessions without a connect right are
    disconnected with 0x87 (see the module docstring).
    """
    removed = 0
    for session in gateway.connected_sessions():
        for topic_filter, why in session.subscriptions.remove_refused():
            removed += 1
            log_event(
                logging.WARNING,
                "subscription_removed_by_policy",
                f"subscription {topic_filter!r} removed after {reason}: {why}",
                peer=session.peer,
                identity=session.identity.name,
            )
    lost: dict[Identity, str] = {}
    for identity in gateway.sessions():
        decision = policy.decide(identity, Action.CONNECT, identity.name)
        if not decision.allowed:
            lost[identity] = decision.explain()
    dropped = 0
    if lost:
        dropped = await gateway.drop_sessions(
            lambda identity: identity in lost,
            reason=f"{reason}: " + "; ".join(sorted(set(lost.values())))[:200],
            code=LOST_CONNECT,
        )
    if removed or dropped:
        log.info(
            "policy change %s: %d subscriptions removed, %d sessions dropped",
            reason,
            removed,
            dropped,
            extra={"tether_code": "policy_reevaluated"},
        )
    return dropped
