"""Enrollment asks the policy engine (action ``enroll``, resource = the serial): the built-in
policies keep today's enrollment and renewal, an attached policy without ``enroll`` refuses
with a clear code, issues nothing and is audited."""

from __future__ import annotations

import pytest
from cryptography import x509

from tests.cloud.conftest import ACTOR
from tests.cloud.enrollment.conftest import World, csr_pem
from tether.cloud.enrollment import Credential, CredentialKind, EnrollResult
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.policy import DocumentPolicy
from tether.cloud.policy.evaluate import Subject
from tether.cloud.policy.resolve import Resolver
from tether.cloud.registry.policies import TargetKind
from tether.errors import TetherError
from tether.pki import generate_key

CONNECT_ONLY = {
    "version": "1",
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"], "resources": ["${serial}"]}
    ],
}
NO_ENROLL_OF_VIP = {
    "version": "1",
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect", "enroll"],
         "resources": ["${serial}"]},
        {"sid": "not-vip", "effect": "deny", "actions": ["enroll"], "resources": ["vip-1"]},
    ],
}  # fmt: skip


def _policy(world: World) -> DocumentPolicy:
    """The gateway's kind of policy over the registry's current snapshot (re-read each time)."""

    def resolve(identity: Identity) -> Subject:
        resolver = Resolver(world.registry.policy_snapshot())
        return resolver.subject(identity.kind.value, identity.name, identity.issuer_fingerprint)

    policy = DocumentPolicy(resolve)
    world.enrollment.policy = policy
    return policy


def _refusals(world: World) -> list[str]:
    return [e.target for e in world.registry.audit_after(0) if e.action == "enrollment.refused"]


def test_builtin_policies_keep_factory_claim_and_renewal_working(world: World) -> None:
    _policy(world)
    key, birth = world.factory_unit("pol-f1")
    enrolled = world.enrollment.enroll(
        csr_pem(key, "pol-f1"), world.enrollment.credential_for(world.identity(birth))
    )
    assert enrolled.result is EnrollResult.ENROLLED
    renewed = world.enrollment.renew(csr_pem(key, "pol-f1"), world.identity(enrolled.certificate))
    assert renewed.result is EnrollResult.RENEWED
    bundle = world.admin.create_claim("pol-batch", actor=ACTOR)
    claim = world.identity(x509.load_pem_x509_certificate(bundle.certificate_pem.encode()))
    by_claim = world.enrollment.enroll(
        csr_pem(generate_key(), "pol-c1"), world.enrollment.credential_for(claim)
    )
    assert by_claim.serial == "pol-c1"
    assert _refusals(world) == []


def test_a_policy_without_enroll_refuses_renewal_issues_nothing_and_is_audited(
    world: World,
) -> None:
    policy = _policy(world)
    issued = world.admin.create_enrollment_token("pol-r1", actor=ACTOR)
    key = generate_key()
    enrolled = world.enrollment.enroll(  # a token has no identity to decide for: allowed
        csr_pem(key, "pol-r1"), Credential(CredentialKind.TOKEN, token=issued.token)
    )
    world.admin.put_policy("connect-only", CONNECT_ONLY, actor=ACTOR)
    world.admin.attach_policy("connect-only", TargetKind.DEVICE, "pol-r1", actor=ACTOR)
    policy.invalidate()
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.renew(csr_pem(key, "pol-r1"), world.identity(enrolled.certificate))
    assert refused.value.code == "enrollment_policy_denied"
    assert "no statement allows it" in refused.value.message
    assert world.certificates() == count
    assert _refusals(world) == ["pol-r1"]


def test_a_deny_on_the_factory_ca_refuses_that_serial_only(world: World) -> None:
    policy = _policy(world)
    world.admin.put_policy("no-vip", NO_ENROLL_OF_VIP, actor=ACTOR)
    factory = world.identity(world.factory_unit("pol-ok")[1]).issuer_fingerprint
    world.admin.attach_policy("no-vip", TargetKind.CA, factory, actor=ACTOR)
    policy.invalidate()
    key, birth = world.factory_unit("vip-1")
    credential = world.enrollment.credential_for(world.identity(birth))  # JIT: +1 certificate
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(csr_pem(key, "vip-1"), credential)
    assert refused.value.code == "enrollment_policy_denied"
    assert "no-vip" in refused.value.message and "not-vip" in refused.value.message
    assert world.certificates() == count
    assert _refusals(world) == ["vip-1"]
    other_key, other = world.factory_unit("pol-ok2")
    outcome = world.enrollment.enroll(
        csr_pem(other_key, "pol-ok2"), world.enrollment.credential_for(world.identity(other))
    )
    assert outcome.result is EnrollResult.ENROLLED
