"""The cloud through its admin API: the same methods as :class:`LocalCloud`, over HTTPS.

The API's certificate is verified against the pinned CA file alone (``target.pinned_context``)
and the host name in ``--url``; the token goes in ``Authorization: Bearer``. A refusal comes
back as :class:`RemoteError` with the API's ``code`` and ``message``, so a script matches the
same codes whichever way it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from cryptography import x509
from pydantic import BaseModel, TypeAdapter

from tether.cli.cloud.target import RemoteError, pinned_context
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
from tether.cloud.policy.document import MAX_DOCUMENT_BYTES, Action, parse_document
from tether.cloud.registry import CARole, CAStatus, DeviceStatus
from tether.cloud.registry.policies import TargetKind
from tether.errors import ConfigurationError, UsageError

M = TypeVar("M", bound=BaseModel)
TIMEOUT_S = 30.0


def _path(value: str) -> str:
    return quote(value, safe="")


class RemoteCloud:
    """``tether cloud`` against an admin API (``--url``)."""

    remote = True

    def __init__(self, url: str, *, token: str, ca_file: Path) -> None:
        if not url.startswith("https://"):
            raise UsageError(f"--url must be https:// (the admin API speaks only TLS), not {url!r}")
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            verify=pinned_context(ca_file),
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )

    def __enter__(self) -> RemoteCloud:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"cannot reach the admin API at {self.url}: {exc}", code="api_unreachable"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                code, message = str(body["code"]), str(body["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "api_refused", f"HTTP {response.status_code}: {response.text[:200]}"
            raise RemoteError(message, code=code)
        if response.status_code == 204:  # a delete: nothing to return
            return None
        return response.json()

    def _get(self, model: type[M], path: str, **params: Any) -> M:
        query = {k: v for k, v in params.items() if v is not None}
        return model.model_validate(self._call("GET", path, params=query))

    def _post(self, model: type[M], path: str, body: dict[str, Any] | None = None) -> M:
        return model.model_validate(self._call("POST", path, json=body or {}))

    # -- devices ---------------------------------------------------------------------------

    def devices(self, *, search: str | None, offset: int, limit: int) -> DevicePage:
        return self._get(DevicePage, "/api/v1/devices", search=search, offset=offset, limit=limit)

    def device(self, serial: str) -> DeviceDetailOut:
        return self._get(DeviceDetailOut, f"/api/v1/devices/{_path(serial)}")

    def set_device_status(self, serial: str, status: DeviceStatus) -> DeviceOut:
        verb = "disable" if status is DeviceStatus.DISABLED else "enable"
        return self._post(DeviceOut, f"/api/v1/devices/{_path(serial)}/{verb}")

    def move_device(self, serial: str, ca_fingerprint: str) -> DeviceOut:
        body = {"ca_fingerprint": ca_fingerprint}
        return self._post(DeviceOut, f"/api/v1/devices/{_path(serial)}/ca", body)

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
        return self._get(
            CertificatePage,
            "/api/v1/certificates",
            device=device,
            issuer=issuer,
            serial_number=serial_number,
            offset=offset,
            limit=limit,
        )

    def revoke(self, fingerprint: str, reason: x509.ReasonFlags) -> CertificateOut:
        path = f"/api/v1/certificates/{_path(fingerprint)}/revoke"
        return self._post(CertificateOut, path, {"reason": reason.name})

    def register_certificate(self, certificate_pem: bytes) -> RegisteredCertificateOut:
        body = {"certificate_pem": certificate_pem.decode("ascii", "replace")}
        return self._post(RegisteredCertificateOut, "/api/v1/certificates", body)

    # -- CAs and CRLs ----------------------------------------------------------------------

    def cas(self, status: CAStatus | None = None) -> list[CAOut]:
        query = {} if status is None else {"status": status.value}
        return TypeAdapter(list[CAOut]).validate_python(
            self._call("GET", "/api/v1/cas", params=query)
        )

    def set_ca_status(self, fingerprint: str, status: CAStatus) -> CAOut:
        path = f"/api/v1/cas/{_path(fingerprint)}/status"
        return self._post(CAOut, path, {"status": status.value})

    def registration_code(self) -> RegistrationCodeOut:
        return self._post(RegistrationCodeOut, "/api/v1/cas/registration-codes")

    def register_ca(
        self,
        certificate_pem: bytes,
        *,
        role: CARole,
        allow_jit: bool,
        prove: Callable[[str], bytes] | None,
    ) -> CAOut:
        if prove is None:
            raise UsageError(
                "registering a CA through the API needs proof of possession of its key: give "
                "--ca-dir DIR (its key signs a verification certificate now), or "
                "--verification-cert FILE with --code CODE (from `tether cloud registration-code`)"
            )
        code = self.registration_code().code
        return self._register_ca(certificate_pem, prove(code), code, role, allow_jit)

    def register_ca_with_proof(
        self, certificate_pem: bytes, verification_pem: bytes, code: str, role: CARole, jit: bool
    ) -> CAOut:
        return self._register_ca(certificate_pem, verification_pem, code, role, jit)

    def _register_ca(
        self, certificate_pem: bytes, verification: bytes, code: str, role: CARole, jit: bool
    ) -> CAOut:
        body = {
            "certificate_pem": certificate_pem.decode("ascii", "replace"),
            "verification_certificate_pem": verification.decode("ascii", "replace"),
            "registration_code": code,
            "role": role.value,
            "allow_auto_registration": jit,
        }
        return self._post(CAOut, "/api/v1/cas", body)

    def publish_crl(self, issuer: str | None, crl: bytes) -> CrlEffectOut:
        path = "/api/v1/crl/root" if issuer is None else f"/api/v1/cas/{_path(issuer)}/crl"
        body = {"crl_pem": _crl_pem(crl)}
        return CrlEffectOut.model_validate(self._call("PUT", path, json=body))

    # -- audit and admins ------------------------------------------------------------------

    def audit_log(self, *, target: str | None, offset: int, limit: int) -> AuditPage:
        return self._get(AuditPage, "/api/v1/audit", target=target, offset=offset, limit=limit)

    def admins(self) -> list[AdminOut]:
        return TypeAdapter(list[AdminOut]).validate_python(self._call("GET", "/api/v1/admins"))

    def add_admin(self, name: str) -> AdminTokenOut:
        return self._post(AdminTokenOut, "/api/v1/admins", {"name": name})

    def rotate_admin(self, name: str) -> AdminTokenOut:
        return self._post(AdminTokenOut, f"/api/v1/admins/{_path(name)}/rotate")

    def revoke_admin(self, name: str) -> AdminOut:
        return self._post(AdminOut, f"/api/v1/admins/{_path(name)}/revoke")

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
        # ``passphrase`` is not asked: the API's process holds the online CA open already.
        body: dict[str, Any] = {
            "name": name,
            "serials": serials,
            "max_enrollments": max_enrollments,
            "valid_for": valid_for,
        }
        if csr_pem is not None:
            body["csr_pem"] = csr_pem.decode("ascii", "replace")
        return self._post(ClaimCreatedOut, "/api/v1/claims", body)

    def claims(self) -> list[ClaimOut]:
        return TypeAdapter(list[ClaimOut]).validate_python(self._call("GET", "/api/v1/claims"))

    def create_enrollment_token(self, serial: str, *, valid_for: int) -> EnrollmentTokenOut:
        body = {"serial": serial, "valid_for": valid_for}
        return self._post(EnrollmentTokenOut, "/api/v1/enrollment-tokens", body)

    def renew_now(self, serial: str) -> RenewRequestedOut:
        return self._post(RenewRequestedOut, f"/api/v1/devices/{_path(serial)}/renew-now")

    # -- policies: documents, attachments, groups and attributes, questions ----------------

    def policies(self) -> list[PolicyOut]:
        return TypeAdapter(list[PolicyOut]).validate_python(self._call("GET", "/api/v1/policies"))

    def policy(self, name: str, *, version: int | None = None) -> PolicyOut:
        return self._get(PolicyOut, f"/api/v1/policies/{_path(name)}", version=version)

    def put_policy(self, name: str, document: bytes) -> PolicyOut:
        body = _document(document)
        return PolicyOut.model_validate(
            self._call("PUT", f"/api/v1/policies/{_path(name)}", json=body)
        )

    def delete_policy(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/policies/{_path(name)}")

    def attachments(
        self, *, kind: TargetKind | None = None, target: str | None = None
    ) -> list[AttachmentOut]:
        query = {k: v for k, v in {"kind": kind, "target": target}.items() if v is not None}
        found = self._call("GET", "/api/v1/policy-attachments", params=query)
        return TypeAdapter(list[AttachmentOut]).validate_python(found)

    def attach_policy(self, name: str, kind: TargetKind, target: str) -> AttachmentOut:
        body = {"kind": kind.value, "target": target}
        return self._post(AttachmentOut, f"/api/v1/policies/{_path(name)}/attachments", body)

    def detach_policy(self, name: str, kind: TargetKind, target: str) -> None:
        path = f"/api/v1/policies/{_path(name)}/attachments/{kind.value}/{_path(target)}"
        self._call("DELETE", path)

    def device_groups(self, serial: str) -> list[str]:
        return _strings(self._call("GET", f"/api/v1/devices/{_path(serial)}/groups"))

    def add_device_group(self, serial: str, group: str) -> list[str]:
        path = f"/api/v1/devices/{_path(serial)}/groups/{_path(group)}"
        return _strings(self._call("PUT", path))

    def remove_device_group(self, serial: str, group: str) -> list[str]:
        path = f"/api/v1/devices/{_path(serial)}/groups/{_path(group)}"
        return _strings(self._call("DELETE", path))

    def device_attributes(self, serial: str) -> dict[str, str]:
        return _labels(self._call("GET", f"/api/v1/devices/{_path(serial)}/attributes"))

    def set_device_attribute(self, serial: str, name: str, value: str | None) -> dict[str, str]:
        path = f"/api/v1/devices/{_path(serial)}/attributes/{_path(name)}"
        if value is None:
            return _labels(self._call("DELETE", path))
        return _labels(self._call("PUT", path, json={"value": value}))

    def test_policy(self, kind: str, name: str, action: Action, resource: str) -> DecisionOut:
        body = {"kind": kind, "name": name, "action": action.value, "resource": resource}
        return self._post(DecisionOut, "/api/v1/policies/test", body)

    def effective_policy(self, kind: str, name: str) -> EffectivePolicyOut:
        plural = "services" if kind == "service" else "devices"
        return self._get(EffectivePolicyOut, f"/api/v1/{plural}/{_path(name)}/policy")


def _strings(data: Any) -> list[str]:
    return TypeAdapter(list[str]).validate_python(data)


def _labels(data: Any) -> dict[str, str]:
    return TypeAdapter(dict[str, str]).validate_python(data)


def _document(raw: bytes) -> dict[str, Any]:
    """A policy file as the API's JSON body; what is not a JSON object (or is too big) is
    refused here with the validator's own error (``policy_invalid``), as on the cloud host."""
    try:
        body = json.loads(raw) if len(raw) <= MAX_DOCUMENT_BYTES else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        parse_document(raw)  # raises InvalidPolicyError saying what is wrong
        raise AssertionError("unreachable: a non-object document always fails validation")
    return body


def _crl_pem(crl: bytes) -> str:
    """The API takes PEM; a DER CRL (``tether ca crl`` writes either) is converted."""
    if crl.lstrip().startswith(b"-----BEGIN"):
        return crl.decode("ascii", "replace")
    from cryptography.hazmat.primitives.serialization import Encoding

    from tether.cloud.operations import load_crl

    return load_crl(crl).public_bytes(Encoding.PEM).decode("ascii")
