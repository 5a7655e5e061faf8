"""The one enroll operation against a real registry: each birth credential, idempotency,
renewal and rotation with succession, and every refusal changing nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cloud.conftest import ACTOR
from tests.cloud.enrollment.conftest import World, csr_pem, fingerprint
from tether.cloud.enrollment import Credential, CredentialKind, EnrollResult
from tether.cloud.enrollment.hook import HookRequest, HookRunner, HookVerdict
from tether.cloud.gateway.identity import HandshakeRefused, IdentityKind
from tether.cloud.registry import CertState, VerdictCode
from tether.errors import TetherError
from tether.pki import generate_key


def test_factory_unit_enrolls_and_the_serial_moves_to_the_operational_ca(world: World) -> None:
    key, birth = world.factory_unit("unit-1")
    identity = world.identity(birth)  # JIT under the factory CA
    outcome = world.enrollment.enroll(
        csr_pem(key, "unit-1"), world.enrollment.credential_for(identity)
    )
    assert outcome.result is EnrollResult.ENROLLED and outcome.serial == "unit-1"
    assert outcome.certificate.issuer == world.pki.device_ca.certificate.subject
    assert outcome.chain_pem.count("BEGIN CERTIFICATE") == 3  # leaf, operational CA, root
    device = world.registry.get_device("unit-1")
    assert device.ca_fingerprint == world.enrollment.ca_fingerprint
    # The operational certificate connects; the birth certificate does not any more.
    assert world.identity(outcome.certificate).kind is IdentityKind.DEVICE
    # Within the overlap the birth certificate connects enroll-only (a lost reply's retry)...
    assert world.identity(birth).kind is IdentityKind.CLAIM
    retry = world.enrollment.credential_for(world.identity(birth))
    assert world.enrollment.enroll(csr_pem(key, "unit-1"), retry).certificate == outcome.certificate
    # ...then it is retired and refused.
    later = world.registry._clock() + timedelta(hours=1, seconds=1)
    world.registry._clock = lambda: later
    assert world.enrollment.retire_due() == [fingerprint(birth)]
    with pytest.raises(HandshakeRefused) as refused:
        world.identity(birth)
    assert refused.value.code == VerdictCode.SERIAL_BOUND_TO_OTHER_CA
    assert world.registry.certificate_history("unit-1") == [
        (fingerprint(birth), fingerprint(outcome.certificate), "enrolled")
    ]


def test_a_retry_returns_the_same_result_and_issues_nothing(world: World) -> None:
    key, birth = world.factory_unit("unit-2")
    credential = world.enrollment.credential_for(world.identity(birth))
    request = csr_pem(key, "unit-2")
    first = world.enrollment.enroll(request, credential)
    count = world.certificates()
    again = world.enrollment.enroll(request, credential)
    assert again.certificate == first.certificate and again.result is first.result
    assert again.replayed and not first.replayed
    assert world.certificates() == count


def test_one_time_token_enrolls_once_and_a_replay_is_refused(world: World) -> None:
    issued = world.admin.create_enrollment_token("tok-1", actor=ACTOR)
    credential = Credential(CredentialKind.TOKEN, token=issued.token)
    key = generate_key()
    first = world.enrollment.enroll(csr_pem(key, "tok-1"), credential)
    assert first.result is EnrollResult.ENROLLED
    # The same request again (a lost reply) gets the same certificate back.
    assert world.enrollment.enroll(csr_pem(key, "tok-1"), credential).certificate == (
        first.certificate
    )
    count = world.certificates()
    with pytest.raises(TetherError) as replay:
        world.enrollment.enroll(csr_pem(generate_key(), "tok-1"), credential)
    assert replay.value.code == "enrollment_token_used"
    assert world.certificates() == count


@pytest.mark.parametrize(
    ("make_request", "code"),
    [
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n", "pki_malformed_input"),
        (lambda: csr_pem(ec.generate_private_key(ec.SECP384R1()), "tok-2"), "pki_unsupported_key"),
        (lambda: csr_pem(generate_key(), "someone-else"), "enrollment_serial_mismatch"),
    ],
    ids=["malformed", "p384", "other-serial"],
)
def test_bad_csrs_are_refused_and_change_nothing(world: World, make_request, code: str) -> None:  # type: ignore[no-untyped-def]
    issued = world.admin.create_enrollment_token("tok-2", actor=ACTOR)
    audit = world.registry.list_audit(limit=1).total
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(
            make_request(), Credential(CredentialKind.TOKEN, token=issued.token)
        )
    assert refused.value.code == code
    assert world.certificates() == count
    assert world.registry.list_audit(limit=1).total == audit
    # The token was not spent by the refusal.
    ok = world.enrollment.enroll(
        csr_pem(generate_key(), "tok-2"), Credential(CredentialKind.TOKEN, token=issued.token)
    )
    assert ok.serial == "tok-2"


def test_factory_csr_for_another_serial_is_refused(world: World) -> None:
    key, birth = world.factory_unit("unit-3")
    credential = world.enrollment.credential_for(world.identity(birth))
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(csr_pem(key, "unit-4"), credential)
    assert refused.value.code == "enrollment_serial_mismatch"


def test_claim_enrolls_only_inside_its_policy(world: World) -> None:
    bundle = world.admin.create_claim(
        "batch-7", serials=["b7-1", "b7-2", "b7-3"], max_enrollments=2, actor=ACTOR
    )
    claim_cert = x509.load_pem_x509_certificate(bundle.certificate_pem.encode())
    identity = world.identity(claim_cert)
    assert identity.kind is IdentityKind.CLAIM and identity.name == "claim.batch-7"
    credential = world.enrollment.credential_for(identity)
    assert credential.kind is CredentialKind.CLAIM
    first = world.enrollment.enroll(csr_pem(generate_key(), "b7-1"), credential)
    assert first.result is EnrollResult.ENROLLED
    with pytest.raises(TetherError) as outside:
        world.enrollment.enroll(csr_pem(generate_key(), "other-9"), credential)
    assert outside.value.code == "claim_policy_refused"
    world.enrollment.enroll(
        csr_pem(generate_key(), "b7-2"), world.enrollment.credential_for(identity)
    )
    with pytest.raises(TetherError) as used_up:
        world.enrollment.enroll(
            csr_pem(generate_key(), "b7-3"), world.enrollment.credential_for(identity)
        )
    assert used_up.value.code == "claim_policy_refused"
    with pytest.raises(TetherError) as renew:
        world.enrollment.renew(csr_pem(generate_key(), None), identity)
    assert renew.value.code == "enrollment_not_allowed"


def test_an_expired_claim_no_longer_connects_or_enrolls(world: World) -> None:
    bundle = world.admin.create_claim("short", actor=ACTOR)
    cert = x509.load_pem_x509_certificate(bundle.certificate_pem.encode())
    credential = world.enrollment.credential_for(world.identity(cert))
    later = bundle.claim.expires_at + timedelta(seconds=1)
    world.registry._clock = lambda: later
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(csr_pem(generate_key(), "late-1"), credential)
    assert refused.value.code == "claim_policy_refused"


def test_renewal_keeps_the_key_rotation_changes_it_and_the_old_one_retires(world: World) -> None:
    issued = world.admin.create_enrollment_token("life-1", actor=ACTOR)
    key = generate_key()
    enrolled = world.enrollment.enroll(
        csr_pem(key, "life-1"), Credential(CredentialKind.TOKEN, token=issued.token)
    )
    renewed = world.enrollment.renew(csr_pem(key, "life-1"), world.identity(enrolled.certificate))
    assert renewed.result is EnrollResult.RENEWED
    new_key = generate_key()
    rotated = world.enrollment.renew(csr_pem(new_key, None), world.identity(renewed.certificate))
    assert rotated.result is EnrollResult.ROTATED
    assert rotated.certificate.public_key() == new_key.public_key()
    history = world.registry.certificate_history("life-1")
    assert [kind for _, _, kind in history] == ["renewed", "rotated"]
    # Inside the overlap both still connect; after it the old ones are retired.
    assert world.enrollment.retire_due() == []
    world.identity(enrolled.certificate)
    later = world.registry._clock() + timedelta(hours=1, seconds=1)
    world.registry._clock = lambda: later
    retired = world.enrollment.retire_due()
    assert set(retired) == {fingerprint(enrolled.certificate), fingerprint(renewed.certificate)}
    assert world.registry.get_certificate(retired[0]).state is CertState.INACTIVE
    with pytest.raises(HandshakeRefused) as refused:
        world.identity(enrolled.certificate)
    assert refused.value.code == VerdictCode.CERTIFICATE_INACTIVE
    assert world.identity(rotated.certificate).name == "life-1"
    assert world.registry.get_device("life-1").serial == "life-1"


def test_a_device_under_another_ca_cannot_renew_into_this_one(world: World) -> None:
    key = generate_key()
    foreign = world.pki.stranger_ca.issue_device_certificate_for_key(key.public_key(), "far-1")
    world.registry.add_device("far-1", provisioning="console", actor=ACTOR)  # type: ignore[arg-type]
    world.registry.add_certificate(
        foreign,
        device_serial="far-1",
        issuer_fingerprint=fingerprint(world.pki.stranger_ca.certificate),
        actor=ACTOR,
    )
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.renew(csr_pem(key, "far-1"), world.identity(foreign))
    assert refused.value.code == "renewal_wrong_ca"
    assert world.certificates() == count


def _hooked(world: World, hook) -> None:  # type: ignore[no-untyped-def]
    world.enrollment.hook = HookRunner(hook, deadline=0.5)


def test_hook_picks_the_serial_and_sets_attributes_audited_with_latency(world: World) -> None:
    seen: list[HookRequest] = []

    def hook(request: HookRequest) -> HookVerdict:
        seen.append(request)
        return HookVerdict(allow=True, serial="picked-1", attributes={"site": "lyon"})

    _hooked(world, hook)
    bundle = world.admin.create_claim("anyone", actor=ACTOR)
    cert = x509.load_pem_x509_certificate(bundle.certificate_pem.encode())
    outcome = world.enrollment.enroll(
        csr_pem(generate_key(), None), world.enrollment.credential_for(world.identity(cert))
    )
    assert outcome.serial == "picked-1" and outcome.attributes == {"site": "lyon"}
    assert seen[0].credential == "claim" and seen[0].serial is None
    hook_rows = [
        e for e in world.registry.list_audit(limit=20).items if e.action == "enrollment.hook"
    ]
    assert hook_rows and hook_rows[0].details["verdict"] == "allowed"
    assert isinstance(hook_rows[0].details["latency_ms"], int)


def test_hook_labels_become_the_devices_attributes_and_groups(world: World) -> None:
    def hook(request: HookRequest) -> HookVerdict:
        return HookVerdict(
            allow=True, attributes={"site": "lyon", "line": "l2"}, groups=("line-2", "eu")
        )

    _hooked(world, hook)
    issued = world.admin.create_enrollment_token("labelled-1", actor=ACTOR)
    key = generate_key()
    credential = Credential(CredentialKind.TOKEN, token=issued.token)
    outcome = world.enrollment.enroll(csr_pem(key, "labelled-1"), credential)
    assert outcome.attributes == {"site": "lyon", "line": "l2"}  # still in the answer
    assert world.registry.device_attributes("labelled-1") == {"site": "lyon", "line": "l2"}
    assert set(world.registry.device_groups("labelled-1")) == {"line-2", "eu"}
    rows = [e for e in world.registry.list_audit(limit=40).items if e.target == "labelled-1"]
    assert {e.action for e in rows} >= {"device.attribute", "device.group_add"}
    # A retry answers the same and writes no label twice.
    again = world.enrollment.enroll(csr_pem(key, "labelled-1"), credential)
    assert again.replayed and again.attributes == outcome.attributes
    rows_after = [e for e in world.registry.list_audit(limit=40).items if e.target == "labelled-1"]
    assert len(rows_after) == len(rows)


@pytest.mark.parametrize(
    "labels",
    [{"attributes": {"Bad Name": "x"}}, {"attributes": {"site": "a/b"}}, {"groups": ["no spaces"]}],
)
def test_hook_labels_that_are_not_valid_refuse_and_issue_nothing(
    world: World, labels: dict[str, object]
) -> None:
    _hooked(world, lambda request: {"allow": True, **labels})
    issued = world.admin.create_enrollment_token("labelled-2", actor=ACTOR)
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(
            csr_pem(generate_key(), "labelled-2"),
            Credential(CredentialKind.TOKEN, token=issued.token),
        )
    assert refused.value.code == "hook_failed" and "labels" in refused.value.message
    assert world.certificates() == count


@pytest.mark.parametrize("behaviour", ["timeout", "raise", "refuse", "nonsense"])
def test_a_failing_hook_is_a_clear_refusal_and_issues_nothing(world: World, behaviour: str) -> None:
    def hook(request: HookRequest) -> HookVerdict:
        if behaviour == "timeout":
            time.sleep(2)
        if behaviour == "raise":
            raise RuntimeError("database of the operator is down")
        if behaviour == "nonsense":
            return 42  # type: ignore[return-value]
        return HookVerdict(allow=False, reason="not in the shipping list")

    _hooked(world, hook)
    issued = world.admin.create_enrollment_token("hooked-1", actor=ACTOR)
    count = world.certificates()
    with pytest.raises(TetherError) as refused:
        world.enrollment.enroll(
            csr_pem(generate_key(), "hooked-1"),
            Credential(CredentialKind.TOKEN, token=issued.token),
        )
    expected = {"timeout": "hook_timeout", "raise": "hook_failed", "nonsense": "hook_failed"}
    assert refused.value.code == expected.get(behaviour, "hook_refused")
    assert world.certificates() == count
    rows = [e for e in world.registry.list_audit(limit=20).items if e.action == "enrollment.hook"]
    assert rows[0].details["verdict"] == refused.value.code


def test_a_storm_is_committed_in_groups_and_a_refusal_spoils_nothing(world: World) -> None:
    """Concurrent enrollments share commits; each is durable when returned; a replayed token
    in the same group is refused alone."""
    from concurrent.futures import ThreadPoolExecutor

    from tether.cloud.registry import Registry

    tokens = [world.admin.create_enrollment_token(f"st-{i}", actor=ACTOR).token for i in range(24)]
    spent = world.admin.create_enrollment_token("st-spent", actor=ACTOR).token
    world.enrollment.enroll(
        csr_pem(generate_key(), "st-spent"), Credential(CredentialKind.TOKEN, token=spent)
    )
    racing = world.admin.create_enrollment_token("st-race", actor=ACTOR).token
    jobs = [(f"st-{i}", t) for i, t in enumerate(tokens)] + [("st-spent", spent)] * 3
    jobs += [("st-race", racing)] * 3  # one token, three different CSRs at once

    def one(job: tuple[str, str]) -> object:
        serial, token = job
        try:
            return world.enrollment.enroll(
                csr_pem(generate_key(), serial), Credential(CredentialKind.TOKEN, token=token)
            )
        except TetherError as exc:
            return exc.code

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, jobs))
    refused = [r for r in results if isinstance(r, str)]
    assert refused == ["enrollment_token_used"] * 5
    assert world.registry.list_certificates(device_serial="st-race").total == 1
    committer = world.registry._committer  # type: ignore[attr-defined]
    assert committer.batches <= committer.committed
    # Every returned certificate is committed: a separate connection sees it.
    with Registry.open(world.registry._engine.url.render_as_string(hide_password=False)) as other:
        for result in results:
            if not isinstance(result, str):
                other.get_certificate(fingerprint(result.certificate))  # type: ignore[attr-defined]
        assert other.list_audit(limit=1).total == world.registry.list_audit(limit=1).total


def test_a_claim_stops_connecting_when_its_policy_expires(world: World) -> None:
    bundle = world.admin.create_claim("brief", valid_for=timedelta(seconds=2), actor=ACTOR)
    cert = x509.load_pem_x509_certificate(bundle.certificate_pem.encode())
    assert world.identity(cert).kind is IdentityKind.CLAIM
    time.sleep(max(0.0, (bundle.claim.expires_at - datetime.now(UTC)).total_seconds()) + 0.5)
    with pytest.raises(HandshakeRefused) as refused:
        world.identity(cert)
    assert refused.value.code in ("certificate_expired", "claim_expired")
