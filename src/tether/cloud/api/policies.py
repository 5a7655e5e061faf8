"""The admin API's policy routes: documents, attachments, device groups and attributes,
a device's effective policy, and "what would the gateway decide?".

Writes go through the admin service (:class:`~tether.cloud.policy.admin.PolicyAdmin`, part of
``AdminOperations``); every one is audited and reaches live sessions through the change
feed. The document schema is published at ``GET /api/v1/policies/schema``. A document that
fails validation is a 400 ``policy_invalid`` whose message names the statement.

The response models here are also what ``tether policy`` prints on the cloud host
(``tether.cli.cloud.local``), so a command's table and ``--json`` are the same either way in.
Reads (``GET``) are not audited, as everywhere in the API.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures at runtime.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, Field

from tether.cloud.operations import AdminOperations
from tether.cloud.policy.admin import EffectivePolicy
from tether.cloud.policy.document import POLICY_SCHEMA, Action, parse_document
from tether.cloud.policy.evaluate import Decision
from tether.cloud.registry import AdminRecord, Registry
from tether.cloud.registry.policies import AttachmentRecord, PolicyRecord, TargetKind


class PolicyOut(BaseModel):
    """One version of a policy."""

    name: str
    version: int
    current_version: int
    sha256: str
    created_at: datetime
    created_by: str
    document: dict[str, Any]

    @classmethod
    def of(cls, record: PolicyRecord) -> "PolicyOut":
        """From the registry's record (the stored canonical JSON, parsed)."""
        return cls(
            name=record.name,
            version=record.version,
            current_version=record.current_version,
            sha256=record.sha256,
            created_at=record.created_at,
            created_by=record.created_by,
            document=parse_document(record.document).to_json(),
        )


class AttachmentIn(BaseModel):
    """Where to attach a policy: ``kind`` device/group/ca/service and its name."""

    kind: TargetKind
    target: str = Field(min_length=1, max_length=128)


class AttachmentOut(BaseModel):
    """A policy attached to a target."""

    policy: str
    kind: TargetKind
    target: str
    created_at: datetime

    @classmethod
    def of(cls, record: AttachmentRecord) -> "AttachmentOut":
        """From the registry's record."""
        return cls(
            policy=record.policy,
            kind=record.kind,
            target=record.target,
            created_at=record.created_at,
        )


class AttributeIn(BaseModel):
    """An attribute value (one topic level)."""

    value: str = Field(min_length=1, max_length=128)


class PolicyTestIn(BaseModel):
    """A question: may this device (or service) do ``action`` on ``resource``?"""

    kind: str = Field(default="device", pattern="^(device|service)$")
    name: str = Field(min_length=1, max_length=64)
    action: Action
    resource: str = Field(min_length=1, max_length=1024)


class DecisionOut(BaseModel):
    """The decision and the statement that made it."""

    allowed: bool
    action: Action
    resource: str
    policy: str | None
    version: int | None
    statement: str | None
    reason: str
    explanation: str

    @classmethod
    def of(cls, decision: Decision) -> "DecisionOut":
        """From an evaluation."""
        return cls(
            allowed=decision.allowed,
            action=decision.action,
            resource=decision.resource,
            policy=decision.policy,
            version=decision.version,
            statement=decision.statement,
            reason=decision.reason,
            explanation=decision.explain(),
        )


class RuleOut(BaseModel):
    """One compiled rule of an effective policy (variables substituted)."""

    policy: str
    version: int
    statement: str
    effect: str
    action: Action
    pattern: str


class EffectivePolicyOut(BaseModel):
    """What applies to a device or service now."""

    kind: str
    name: str
    groups: list[str]
    attributes: dict[str, str]
    policies: list[str]
    rules: list[RuleOut]

    @classmethod
    def of(cls, found: EffectivePolicy) -> "EffectivePolicyOut":
        """From the admin service's answer."""
        subject = found.subject
        return cls(
            kind=subject.kind,
            name=subject.name,
            groups=list(subject.groups),
            attributes=dict(subject.attributes),
            policies=[p.name for p in subject.policies],
            rules=[
                RuleOut(
                    policy=p, version=v, statement=sid, effect=effect, action=action, pattern=pat
                )
                for p, v, sid, effect, action, pat in found.rules
            ],
        )


def policy_router(
    registry: Registry,
    ops: AdminOperations,
    *,
    run: Callable[..., Awaitable[Any]],
    admin: Callable[..., Awaitable[AdminRecord]],
) -> APIRouter:
    """The ``/api/v1`` policy routes; ``admin`` is the app's authenticated-admin dependency."""
    router = APIRouter(prefix="/api/v1", tags=["policies"])
    Admin = Annotated[AdminRecord, Depends(admin)]

    @router.get("/policies/schema")
    async def schema(who: Admin) -> dict[str, Any]:
        """The JSON schema of a policy document."""
        return POLICY_SCHEMA

    @router.get("/policies", response_model=list[PolicyOut])
    async def list_policies(who: Admin) -> list[PolicyOut]:
        """Every policy at its current version."""
        return [PolicyOut.of(p) for p in await run(registry.list_policies)]

    @router.put("/policies/{name}", response_model=PolicyOut)
    async def put_policy(
        who: Admin, name: str, document: Annotated[dict[str, Any], Body()]
    ) -> PolicyOut:
        """Create a policy or add its next version (the same document changes nothing)."""
        return PolicyOut.of(await run(ops.put_policy, name, document, actor=who.name))

    @router.get("/policies/{name}", response_model=PolicyOut)
    async def get_policy(
        who: Admin, name: str, version: Annotated[int | None, Query(ge=1)] = None
    ) -> PolicyOut:
        """The current (or the given) version of a policy."""
        return PolicyOut.of(await run(registry.get_policy, name, version=version))

    @router.delete("/policies/{name}", status_code=204)
    async def delete_policy(who: Admin, name: str) -> Response:
        """Delete a policy attached nowhere."""
        await run(ops.delete_policy, name, actor=who.name)
        return Response(status_code=204)

    @router.get("/policies/{name}/attachments", response_model=list[AttachmentOut])
    async def attachments(who: Admin, name: str) -> list[AttachmentOut]:
        """Where a policy is attached."""
        return [AttachmentOut.of(a) for a in await run(registry.list_attachments, policy=name)]

    @router.get("/policy-attachments", response_model=list[AttachmentOut])
    async def all_attachments(
        who: Admin,
        kind: TargetKind | None = None,
        target: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    ) -> list[AttachmentOut]:
        """Every attachment, optionally to one kind of target or one target (not under
        ``/policies/``, where the segment would be a policy's name)."""
        found = await run(registry.list_attachments, kind=kind, target=target)
        return [AttachmentOut.of(a) for a in found]

    @router.post("/policies/{name}/attachments", status_code=201, response_model=AttachmentOut)
    async def attach(who: Admin, name: str, body: AttachmentIn) -> AttachmentOut:
        """Attach a policy to a device, group, CA or service."""
        record = await run(ops.attach_policy, name, body.kind, body.target, actor=who.name)
        return AttachmentOut.of(record)

    @router.delete("/policies/{name}/attachments/{kind}/{target}", status_code=204)
    async def detach(who: Admin, name: str, kind: TargetKind, target: str) -> Response:
        """Detach a policy."""
        await run(ops.detach_policy, name, kind, target, actor=who.name)
        return Response(status_code=204)

    @router.post("/policies/test", response_model=DecisionOut)
    async def test(who: Admin, body: PolicyTestIn) -> DecisionOut:
        """The decision the gateway would make now, and the statement that made it."""
        decision = await run(ops.test_policy, body.kind, body.name, body.action, body.resource)
        return DecisionOut.of(decision)

    @router.get("/devices/{serial}/groups", response_model=list[str], tags=["devices"])
    async def groups(who: Admin, serial: str) -> list[str]:
        """A device's groups, sorted."""
        return list(await run(registry.device_groups, serial))

    @router.get("/devices/{serial}/attributes", response_model=dict[str, str], tags=["devices"])
    async def attributes(who: Admin, serial: str) -> dict[str, str]:
        """A device's attributes."""
        return await run(registry.device_attributes, serial)

    @router.put("/devices/{serial}/groups/{group}", response_model=list[str], tags=["devices"])
    async def add_group(who: Admin, serial: str, group: str) -> list[str]:
        """Put a device in a group; its groups."""
        return list(await run(ops.add_device_group, serial, group, actor=who.name))

    @router.delete("/devices/{serial}/groups/{group}", response_model=list[str], tags=["devices"])
    async def remove_group(who: Admin, serial: str, group: str) -> list[str]:
        """Take a device out of a group; its groups."""
        return list(await run(ops.remove_device_group, serial, group, actor=who.name))

    @router.put(
        "/devices/{serial}/attributes/{name}", response_model=dict[str, str], tags=["devices"]
    )
    async def set_attribute(
        who: Admin, serial: str, name: str, body: AttributeIn
    ) -> dict[str, str]:
        """Set a device attribute; its attributes."""
        return await run(ops.set_device_attribute, serial, name, body.value, actor=who.name)

    @router.delete(
        "/devices/{serial}/attributes/{name}", response_model=dict[str, str], tags=["devices"]
    )
    async def remove_attribute(who: Admin, serial: str, name: str) -> dict[str, str]:
        """Remove a device attribute; its attributes."""
        return await run(ops.set_device_attribute, serial, name, None, actor=who.name)

    @router.get("/devices/{serial}/policy", response_model=EffectivePolicyOut, tags=["devices"])
    async def effective(who: Admin, serial: str) -> EffectivePolicyOut:
        """A device's effective policy: groups, attributes, policies and compiled rules."""
        return EffectivePolicyOut.of(await run(ops.effective_policy, "device", serial))

    @router.get("/services/{name}/policy", response_model=EffectivePolicyOut, tags=["policies"])
    async def service_effective(who: Admin, name: str) -> EffectivePolicyOut:
        """A service's effective policy (a service not in the registry: its own attachments)."""
        return EffectivePolicyOut.of(await run(ops.effective_policy, "service", name))

    return router
