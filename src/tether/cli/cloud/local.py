"""The cloud on this host: its data directory's registry, written through the admin service.

Same methods and same answers (the API's response models) as :class:`RemoteCloud`; the only
difference is the door. Writes go through ``AdminOperations`` with ``cli:<user>`` as the
actor, so a running ``tether cloud serve`` follows them in the audit log and drops affected
sessions at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType

from cryptography import x509

from tether.cloud.api.policies import (
    AttachmentOut,
    DecisionOut,
    EffectivePolicyOut,
    PolicyOut,
)
from tether.cloud.api.schemas import (
    AdminOut,
    AdminTokenOut,
    AuditPage,
    CAOut,
    CertificateOut,
    CertificatePage,
    ClaimCreatedOut,
    ClaimOut,
    CrlEffectOut,
    DeviceDetailOut,
    DeviceOut,
    DevicePage,
    EnrollmentTokenOut,
    RegisteredCertificateOut,
    RegistrationCodeOut,
    RenewRequestedOut,
)
from tether.cloud.device_state import device_states
from tether.cloud.enrollment.admin import valid_for_hours
from tether.cloud.observability.live import read_live_view
from tether.cloud.operations import AdminOperations, check_online_ca
from tether.cloud.policy.document import Action
from tether.cloud.registry import ROOT_CRL_ISSUER, CARole, CAStatus, DeviceStatus, Registry
from tether.cloud.registry.policies import TargetKind
from tether.cloud.settings import CloudSettings
from tether.pki import load_certificate


class LocalCloud:
    """``tether cloud`` against a data directory on this host."""

    remote = False

    def __init__(self, data_dir: Path, *, actor: str) -> None:
        self.settings = CloudSettings.load(data_dir)
        self.actor = actor
        self.registry = Registry.open(self.settings.database_url)
        self.ops = AdminOperations(
            self.registry, root_certificate=self.settings.root_certificate(), online_ca=None
        )

    def __enter__(self) -> LocalCloud:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.registry.close()

    # -- devices ---------------------------------------------------------------------------

    def devices(self, *, search: str | None, offset: int, limit: int) -> DevicePage:
        page = self.registry.list_devices(search=search, offset=offset, limit=limit)
        metrics = self.settings.metrics
        live: Callable[[], object] | None = (
            partial(read_live_view, metrics.host, metrics.port) if metrics.enabled else None
        )
        states = device_states(self.registry, page.items, live_view=live)  # type: ignore[arg-type]
        return DevicePage.of(page).with_states(states)

    def device(self, serial: str) -> DeviceDetailOut:
        device = self.registry.get_device(serial)
        certs = self.registry.list_certificates(device_serial=serial, limit=1000).items
        states = device_states(self.registry, [device], certificates={serial: certs})
        return DeviceDetailOut(
            device=DeviceOut.of(device),
            certificates=[CertificateOut.of(c) for c in certs],
            state=states[serial].label,
        )

    def set_device_status(self, serial: str, status: DeviceStatus) -> DeviceOut:
        return DeviceOut.of(self.ops.set_device_status(serial, status, actor=self.actor))

    def move_device(self, serial: str, ca_fingerprint: str) -> DeviceOut:
        record = self.ops.rebind_device(serial, ca_fingerprint=ca_fingerprint, actor=self.actor)
        return DeviceOut.of(record)

    # -- certificates ----------------------------------------------------------------------

    def certificates(
        self,
        *,
        device: str | None = None,
        issuer: str | None = None,
        serial_number: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> CertificatePage:
        page = self.registry.list_certificates(
            device_serial=device,
            issuer_fingerprint=issuer,
            serial_number=serial_number,
            offset=offset,
            limit=limit,
        )
        return CertificatePage.of(page)

    def revoke(self, fingerprint: str, reason: x509.ReasonFlags) -> CertificateOut:
        record = self.ops.revoke_certificate(fingerprint, reason=reason, actor=self.actor)
        return CertificateOut.of(record)

    def register_certificate(self, certificate_pem: bytes) -> RegisteredCertificateOut:
        device, record = self.ops.register_certificate(certificate_pem, actor=self.actor)
        return RegisteredCertificateOut(
            device=DeviceOut.of(device), certificate=CertificateOut.of(record)
        )

    # -- CAs and CRLs ----------------------------------------------------------------------

    def cas(self, status: CAStatus | None = None) -> list[CAOut]:
        return [CAOut.of(r) for r in self.registry.list_cas(status=status)]

    def set_ca_status(self, fingerprint: str, status: CAStatus) -> CAOut:
        return CAOut.of(self.ops.set_ca_status(fingerprint, status, actor=self.actor))

    def registration_code(self) -> RegistrationCodeOut:
        record = self.ops.new_registration_code(actor=self.actor)
        return RegistrationCodeOut(code=record.code, expires_at=record.expires_at, how_to="")

    def register_ca(
        self,
        certificate_pem: bytes,
        *,
        role: CARole,
        allow_jit: bool,
        prove: Callable[[str], bytes] | None,
    ) -> CAOut:
        # On the cloud host the operator vouches for the CA (as `cloud init` does for the
        # online CA); proof of possession is the API's way in, where anyone could knock.
        record = self.ops.trust_ca(
            load_certificate(certificate_pem),
            role=role,
            allow_auto_registration=allow_jit,
            actor=self.actor,
        )
        return CAOut.of(record)

    def publish_crl(self, issuer: str | None, crl: bytes) -> CrlEffectOut:
        effect = self.ops.publish_crl(issuer or ROOT_CRL_ISSUER, crl, actor=self.actor)
        return CrlEffectOut.of(effect)

    # -- audit and admins ------------------------------------------------------------------

    def audit_log(self, *, target: str | None, offset: int, limit: int) -> AuditPage:
        return AuditPage.of(self.registry.list_audit(target=target, offset=offset, limit=limit))

    def admins(self) -> list[AdminOut]:
        return [AdminOut.of(r) for r in self.registry.list_admins()]

    def add_admin(self, name: str) -> AdminTokenOut:
        issued = self.ops.create_admin(name, actor=self.actor)
        return AdminTokenOut(name=issued.name, token=issued.token, warning="")

    def rotate_admin(self, name: str) -> AdminTokenOut:
        issued = self.ops.rotate_admin(name, actor=self.actor)
        return AdminTokenOut(name=issued.name, token=issued.token)

    def revoke_admin(self, name: str) -> AdminOut:
        return AdminOut.of(self.ops.revoke_admin(name, actor=self.actor))

    # -- enrollment: claims, one-time tokens, renew now ------------------------------------

    def create_claim(
        self,
        name: str,
        *,
        serials: list[str] | None,
        max_enrollments: int | None,
        valid_for: int,
        csr_pem: bytes | None,
        passphrase: Callable[[], str],
    ) -> ClaimCreatedOut:
        # A claim is signed by the online device CA, whose key is here only encrypted: it is
        # opened (``passphrase`` asked) for this one signature, as `serve` opens it.
        hours = valid_for_hours(valid_for)
        online = None
        if self.settings.api.device_ca is not None:
            online = self.settings.online_ca(passphrase())
        if online is not None:
            check_online_ca(self.registry, online)
        signer = AdminOperations(
            self.registry, root_certificate=self.ops.root_certificate, online_ca=online
        )
        bundle = signer.create_claim(
            name,
            serials=serials,
            max_enrollments=max_enrollments,
            valid_for=hours,
            csr_pem=csr_pem,
            actor=self.actor,
        )
        return ClaimCreatedOut.of_bundle(bundle)

    def claims(self) -> list[ClaimOut]:
        return [ClaimOut.of(c) for c in self.ops.list_claims()]

    def create_enrollment_token(self, serial: str, *, valid_for: int) -> EnrollmentTokenOut:
        issued = self.ops.create_enrollment_token(
            serial, valid_for=valid_for_hours(valid_for), actor=self.actor
        )
        return EnrollmentTokenOut.of(issued)

    def renew_now(self, serial: str) -> RenewRequestedOut:
        self.ops.request_renewal(serial, actor=self.actor)
        return RenewRequestedOut(serial=serial)

    # -- policies: documents, attachments, groups and attributes, questions ----------------

    def policies(self) -> list[PolicyOut]:
        return [PolicyOut.of(r) for r in self.registry.list_policies()]

    def policy(self, name: str, *, version: int | None = None) -> PolicyOut:
        return PolicyOut.of(self.registry.get_policy(name, version=version))

    def put_policy(self, name: str, document: bytes) -> PolicyOut:
        return PolicyOut.of(self.ops.put_policy(name, document, actor=self.actor))

    def delete_policy(self, name: str) -> None:
        self.ops.delete_policy(name, actor=self.actor)

    def attachments(
        self, *, kind: TargetKind | None = None, target: str | None = None
    ) -> list[AttachmentOut]:
        found = self.registry.list_attachments(kind=kind, target=target)
        return [AttachmentOut.of(a) for a in found]

    def attach_policy(self, name: str, kind: TargetKind, target: str) -> AttachmentOut:
        return AttachmentOut.of(self.ops.attach_policy(name, kind, target, actor=self.actor))

    def detach_policy(self, name: str, kind: TargetKind, target: str) -> None:
        self.ops.detach_policy(name, kind, target, actor=self.actor)

    def device_groups(self, serial: str) -> list[str]:
        return list(self.registry.device_groups(serial))

    def add_device_group(self, serial: str, group: str) -> list[str]:
        return list(self.ops.add_device_group(serial, group, actor=self.actor))

    def remove_device_group(self, serial: str, group: str) -> list[str]:
        return list(self.ops.remove_device_group(serial, group, actor=self.actor))

    def device_attributes(self, serial: str) -> dict[str, str]:
        return self.registry.device_attributes(serial)

    def set_device_attribute(self, serial: str, name: str, value: str | None) -> dict[str, str]:
        return self.ops.set_device_attribute(serial, name, value, actor=self.actor)

    def test_policy(self, kind: str, name: str, action: Action, resource: str) -> DecisionOut:
        return DecisionOut.of(self.ops.test_policy(kind, name, action, resource))

    def effective_policy(self, kind: str, name: str) -> EffectivePolicyOut:
        return EffectivePolicyOut.of(self.ops.effective_policy(kind, name))
