"""The registry with certificates from tether.pki: the chain the product really builds."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tether.cloud.registry import CARole, Provisioning, Registry, VerdictCode
from tether.pki import RevokedEntry, Role, RootCA


def test_issuing_ca_devices_revocation_and_crl(registry: Registry) -> None:
    root = RootCA.generate()
    issuing = root.create_issuing_ca(common_name="Fleet Devices 1", role=Role.DEVICE)
    ca = registry.register_ca(issuing.certificate, role=CARole.DEVICE, actor="ceremony")
    registry.add_device("SN-100", provisioning=Provisioning.CONSOLE, actor="console")
    leaf = issuing.issue_device_certificate_for_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(), "SN-100"
    )
    record = registry.add_certificate(
        leaf, device_serial="SN-100", issuer_fingerprint=ca.fingerprint, actor="console"
    )
    # The gateway maps a leaf to its CA by the authority key identifier.
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    found = registry.find_ca_by_subject_key_id(aki.key_identifier)
    assert found is not None and found.fingerprint == ca.fingerprint

    registry.revoke_certificate(
        record.fingerprint, reason=x509.ReasonFlags.key_compromise, actor="security"
    )
    verdict = registry.check_connection(
        cert_fingerprint=record.fingerprint,
        device_serial="SN-100",
        issuer_fingerprint=ca.fingerprint,
    )
    assert verdict.reason_code is VerdictCode.CERTIFICATE_REVOKED and not verdict.allowed

    entries = [
        RevokedEntry(r.serial_int, r.revoked_at, r.revocation_reason)  # type: ignore[arg-type]
        for r in registry.revoked_certificates(ca.fingerprint)
    ]
    crl = issuing.build_crl(entries)
    revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert revoked is not None
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
