"""Published CRLs: what ``/crl/`` serves, and applying a CRL to the registry.

Applying a CRL is a revocation like any other: each certificate (or, for the root's CRL, each
issuing CA) it lists is revoked with the same audit action an admin's revocation writes
(``source: crl``), so the gateway's change feed drops live sessions the same way.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, write_audit
from tether.cloud.registry.base import RegistryBase, check_actor, check_fingerprint
from tether.cloud.registry.cas import load_ca, signed_by
from tether.cloud.registry.certificates import revoke
from tether.cloud.registry.errors import CRLApplicationError
from tether.cloud.registry.models import CAModel, CertificateModel, PublishedCRLModel
from tether.cloud.registry.records import CAStatus, CertState, CRLEffect

ROOT_CRL_ISSUER = "root"


class CRLs(RegistryBase):
    """The CRLs the cloud serves, and their effect on the registry."""

    def apply_crl(
        self,
        issuer: str,
        crl: x509.CertificateRevocationList,
        *,
        issuer_certificate: x509.Certificate,
        actor: str,
    ) -> CRLEffect:
        """Publish ``crl`` for ``issuer`` ("root" or a CA fingerprint) and make it take effect.

        In one transaction: the CRL is stored (what ``/crl/`` serves), every registered
        certificate it lists under that CA is revoked with the CRL's reason, and for the root
        every registered issuing CA the root signed whose serial number it lists is revoked;
        each change is audited like a revocation through the API (``source: crl``), so the
        change feed drops live sessions. The CRL must be signed by ``issuer_certificate``
        (CRLApplicationError otherwise, nothing changed). Serial numbers the registry holds
        no certificate for stay refused: registration and JIT check the published CRL.
        """
        actor = check_actor(actor)
        if issuer != ROOT_CRL_ISSUER:
            issuer = check_fingerprint(issuer)
        _check_crl_signer(crl, issuer_certificate)
        der = crl.public_bytes(Encoding.DER)
        listed = {entry.serial_number: _crl_reason(entry) for entry in crl}
        now = self._clock()
        revoked_certs: list[str] = []
        revoked_cas: list[str] = []
        matched = 0
        with self._write() as session:
            _store_crl(session, issuer, der, now, actor)
            if issuer == ROOT_CRL_ISSUER:
                for ca in session.scalars(select(CAModel).order_by(CAModel.id)):
                    ca_cert = x509.load_pem_x509_certificate(ca.pem.encode("ascii"))
                    if ca_cert.serial_number not in listed or not signed_by(
                        ca_cert, issuer_certificate
                    ):
                        continue
                    matched += 1
                    if ca.status != CAStatus.REVOKED.value:
                        old = ca.status
                        ca.status = CAStatus.REVOKED.value
                        ca.updated_at = now
                        write_audit(
                            session, now, actor, AuditAction.CA_STATUS, ca.fingerprint,
                            {"from": old, "to": CAStatus.REVOKED.value, "source": "crl",
                             "reason": listed[ca_cert.serial_number].name},
                        )  # fmt: skip
                        revoked_cas.append(ca.fingerprint)
            else:
                ca = load_ca(session, issuer)
                by_hex = {f"{number:x}": number for number in listed}
                models = session.scalars(
                    select(CertificateModel).where(
                        CertificateModel.issuer_id == ca.id,
                        CertificateModel.serial_number.in_(list(by_hex)),
                    )
                )
                for model in models:
                    matched += 1
                    if model.state == CertState.REVOKED.value:
                        continue
                    reason_flag = listed[by_hex[model.serial_number]]
                    revoke(session, model, reason_flag, now, actor, source="crl")
                    revoked_certs.append(model.fingerprint)
        return CRLEffect(
            revoked_certificates=tuple(revoked_certs),
            revoked_cas=tuple(revoked_cas),
            not_registered=len(listed) - matched,
        )

    def publish_crl(self, issuer: str, der: bytes, *, actor: str) -> None:
        """Store (or replace) the CRL the cloud serves for ``issuer`` ("root" or a CA
        fingerprint). The caller has verified its signature; audited."""
        actor = check_actor(actor)
        if issuer != ROOT_CRL_ISSUER:
            issuer = check_fingerprint(issuer)
        now = self._clock()
        with self._write() as session:
            _store_crl(session, issuer, bytes(der), now, actor)

    def published_crl(self, issuer: str) -> bytes | None:
        """The DER of the CRL uploaded for ``issuer``, or None."""
        with self._read() as session:
            return session.scalar(
                select(PublishedCRLModel.der).where(PublishedCRLModel.issuer == issuer)
            )


def _store_crl(session: Session, issuer: str, der: bytes, now: datetime, actor: str) -> None:
    if issuer != ROOT_CRL_ISSUER:
        load_ca(session, issuer)
    model = session.scalars(
        select(PublishedCRLModel).where(PublishedCRLModel.issuer == issuer)
    ).first()
    if model is None:
        session.add(PublishedCRLModel(issuer=issuer, der=der, uploaded_at=now))
    else:
        model.der = der
        model.uploaded_at = now
    write_audit(session, now, actor, AuditAction.CRL_PUBLISH, issuer, {"bytes": len(der)})


def _crl_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified
    return x509.ReasonFlags.unspecified if reason is x509.ReasonFlags.remove_from_crl else reason


def _check_crl_signer(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise CRLApplicationError(
            f"The CRL is not signed by {issuer.subject.rfc4514_string()}; upload the CRL that "
            "CA signed. Nothing was changed."
        )
