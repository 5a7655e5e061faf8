"""A compromised CA hurts only what it issued: role fit, CRLs that revoke, no serial takeover.

Real Tether CAs (``tether.pki``: EKU and ``OU=tether:<role>`` by role) on a real registry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509

from tests.support.pki import Issued
from tether.cloud.registry import (
    CARole,
    CARoleMismatchError,
    CAStatus,
    CertificateListedOnCRLError,
    CertState,
    CRLApplicationError,
    NotACAError,
    Provisioning,
    Registry,
    SerialBoundError,
    VerdictCode,
)
from tether.pki import RevokedEntry, Role, RootCA, generate_key, sha256_fingerprint

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.generate()


def _device(ca: object, serial: str) -> x509.Certificate:
    return ca.issue_device_certificate_for_key(generate_key().public_key(), serial)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("role", "registered_as"),
    [
        (Role.SERVER, CARole.DEVICE),
        (Role.SERVER, CARole.SERVICE),
        (Role.DEVICE, CARole.FACTORY),
        (Role.FACTORY, CARole.DEVICE),
        (Role.SERVICE, CARole.SERVER),
        (Role.DEVICE, CARole.SERVER),
    ],
)
def test_register_ca_refuses_a_role_that_does_not_fit(
    registry: Registry, root: RootCA, snapshot: Snapshot, role: Role, registered_as: CARole
) -> None:
    ca = root.create_issuing_ca(common_name=f"{role.value} CA", role=role)
    before = snapshot()
    with pytest.raises(CARoleMismatchError) as info:
        registry.register_ca(ca.certificate, role=registered_as, actor="a")
    assert info.value.code == "ca_role_mismatch"
    assert snapshot() == before


def test_register_ca_refuses_the_root_and_leaves(
    registry: Registry, root: RootCA, snapshot: Snapshot
) -> None:
    before = snapshot()
    for role in CARole:
        with pytest.raises(CARoleMismatchError, match="self-signed root"):
            registry.register_ca(root.certificate, role=role, actor="a")
    device_ca = root.create_issuing_ca(common_name="Devices", role=Role.DEVICE)
    with pytest.raises(NotACAError):
        registry.register_ca(_device(device_ca, "SN-1"), role=CARole.DEVICE, actor="a")
    assert snapshot() == before


def test_a_third_party_ca_without_role_markers_fits_client_roles(
    registry: Registry, factory_ca: Issued
) -> None:
    # A vendor factory CA: CN only, no OU, no EKU. Lint warns; the registry accepts it.
    record = registry.register_ca(factory_ca.certificate, role=CARole.FACTORY, actor="a")
    assert record.role is CARole.FACTORY


def test_an_issuing_ca_crl_revokes_what_it_lists(registry: Registry, root: RootCA) -> None:
    factory = root.create_issuing_ca(common_name="Line 1", role=Role.FACTORY)
    fp = registry.register_ca(
        factory.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor="a"
    ).fingerprint
    kept, listed = _device(factory, "SN-1"), _device(factory, "SN-2")
    for cert in (kept, listed):
        registry.register_device_just_in_time(
            cert, device_serial=cert.subject.rfc4514_string()[3:], issuer_fingerprint=fp
        )
    never_seen = _device(factory, "SN-3")
    crl = factory.build_crl(
        [
            RevokedEntry(listed.serial_number, listed.not_valid_before_utc,
                         x509.ReasonFlags.key_compromise),
            RevokedEntry(never_seen.serial_number, listed.not_valid_before_utc),
        ]
    )  # fmt: skip
    effect = registry.apply_crl(fp, crl, issuer_certificate=factory.certificate, actor="sec")
    assert effect.revoked_certificates == (sha256_fingerprint(listed),)
    assert (effect.revoked_cas, effect.not_registered) == ((), 1)
    record = registry.get_certificate(sha256_fingerprint(listed))
    assert record.state is CertState.REVOKED
    assert record.revocation_reason is x509.ReasonFlags.key_compromise
    assert registry.get_certificate(sha256_fingerprint(kept)).state is CertState.ACTIVE
    revoke = next(e for e in registry.list_audit().items if e.action == "certificate.revoke")
    assert (revoke.target, revoke.actor, revoke.details["source"]) == (
        sha256_fingerprint(listed), "sec", "crl",
    )  # fmt: skip
    assert registry.published_crl(fp) is not None
    # A listed serial number the registry never saw stays refused: JIT checks the CRL.
    with pytest.raises(CertificateListedOnCRLError) as info:
        registry.register_device_just_in_time(never_seen, device_serial="SN-3",
                                              issuer_fingerprint=fp)  # fmt: skip
    assert info.value.code == "certificate_revoked"
    # Applying the same CRL again changes nothing more.
    again = registry.apply_crl(fp, crl, issuer_certificate=factory.certificate, actor="sec")
    assert again.revoked_certificates == ()


def test_a_root_crl_revokes_the_issuing_cas_it_lists(registry: Registry, root: RootCA) -> None:
    bad = root.create_issuing_ca(common_name="Lost Factory", role=Role.FACTORY)
    good = root.create_issuing_ca(common_name="Safe Factory", role=Role.FACTORY)
    bad_fp = registry.register_ca(bad.certificate, role=CARole.FACTORY, actor="a").fingerprint
    good_fp = registry.register_ca(good.certificate, role=CARole.FACTORY, actor="a").fingerprint
    crl = root.build_crl(
        [RevokedEntry(bad.certificate.serial_number, bad.certificate.not_valid_before_utc)]
    )
    effect = registry.apply_crl("root", crl, issuer_certificate=root.certificate, actor="sec")
    assert effect.revoked_cas == (bad_fp,)
    assert registry.get_ca(bad_fp).status is CAStatus.REVOKED
    assert registry.get_ca(good_fp).status is CAStatus.ACTIVE
    verdict = registry.check_connection(
        cert_fingerprint="ab" * 32, device_serial="SN-1", issuer_fingerprint=bad_fp
    )
    assert verdict.reason_code is VerdictCode.CA_INACTIVE


def test_a_crl_that_does_not_verify_changes_nothing(
    registry: Registry, root: RootCA, snapshot: Snapshot
) -> None:
    factory = root.create_issuing_ca(common_name="Line 2", role=Role.FACTORY)
    other = root.create_issuing_ca(common_name="Line 3", role=Role.FACTORY)
    fp = registry.register_ca(factory.certificate, role=CARole.FACTORY, actor="a").fingerprint
    registry.add_device("SN-9", provisioning=Provisioning.FACTORY, actor="a")
    cert = _device(factory, "SN-9")
    registry.add_certificate(cert, device_serial="SN-9", issuer_fingerprint=fp, actor="a")
    forged = other.build_crl([RevokedEntry(cert.serial_number, cert.not_valid_before_utc)])
    before = snapshot()
    with pytest.raises(CRLApplicationError):
        registry.apply_crl(fp, forged, issuer_certificate=factory.certificate, actor="x")
    with pytest.raises(CRLApplicationError):
        registry.apply_crl("root", forged, issuer_certificate=root.certificate, actor="x")
    assert snapshot() == before


def test_jit_under_another_factory_ca_cannot_take_a_serial(
    registry: Registry, root: RootCA, snapshot: Snapshot
) -> None:
    a = root.create_issuing_ca(common_name="Factory A", role=Role.FACTORY)
    b = root.create_issuing_ca(common_name="Factory B", role=Role.FACTORY)
    a_fp, b_fp = (
        registry.register_ca(ca.certificate, role=CARole.FACTORY, allow_auto_registration=True,
                             actor="a").fingerprint
        for ca in (a, b)
    )  # fmt: skip
    registry.register_device_just_in_time(_device(a, "SN-7"), device_serial="SN-7",
                                          issuer_fingerprint=a_fp)  # fmt: skip
    before = snapshot()
    with pytest.raises(SerialBoundError):
        registry.register_device_just_in_time(_device(b, "SN-7"), device_serial="SN-7",
                                              issuer_fingerprint=b_fp)  # fmt: skip
    assert snapshot() == before
    # A renewal by the CA the serial belongs to still registers.
    registry.register_device_just_in_time(_device(a, "SN-7"), device_serial="SN-7",
                                          issuer_fingerprint=a_fp)  # fmt: skip
    assert registry.list_certificates(device_serial="SN-7").total == 2
