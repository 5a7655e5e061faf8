"""CA directories on disk: the ceremony's root and each issuing CA, written atomically.

Layout of a CA directory (mode 0700)::

    ca.json       {"version": 1, "kind": "root"|"issuing", "role": null|"<role>",
                   "key": {"type": "file", "path": "ca.key.pem"}}
    ca.crt.pem    the CA certificate
    ca.key.pem    the CA key, encrypted PKCS#8 (see ``tether.pki.keys``), mode 0600
    root.crt.pem  (issuing CAs) the root that signed it, for chains and verification
    revoked.json  {"version": 1, "revoked": [{"serial_number": "<decimal>", "revoked_at": ...,
                   "reason": "<ReasonFlags name>"|null, "subject": ..., "fingerprint": ...}]}
    crl.pem       the CA's current CRL, regenerated from revoked.json on every change

The key reference in ``ca.json`` is typed so that a later version can point at a PKCS#11
key (``{"type": "pkcs11", ...}``); only ``"file"`` is implemented here and any other type is
an ``UnknownKeyReferenceError``.

Atomicity: a new CA directory is assembled in a hidden temporary sibling and renamed into
place in one step, so a crash never leaves half a CA and an existing CA directory is never
overwritten (rename(2) refuses a non-empty target). Single files are replaced by
write-temp-fsync-rename; new output files are linked into place so an existing file is
never clobbered. The key file is created with mode 0600 (``O_CREAT|O_EXCL``), never
world-readable for an instant. Concurrent revocations against one CA directory are not
serialised: the ceremony is a single operator's job.

Why one module of ~480 lines: the layout, the atomic write discipline and the revocation
file are one contract (what a CA directory on disk is); the file helpers have no other user
than this layout and the ceremony CLI that writes next to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from tether.pki.authority import IssuingCA, RevokedEntry, RootCA
from tether.pki.errors import (
    AlreadyRevokedError,
    CaDirectoryError,
    CaDirectoryExistsError,
    CaDirectoryNotFoundError,
    CaStorageError,
    NotIssuedByThisCaError,
    UnknownKeyReferenceError,
)
from tether.pki.keys import (
    check_new_passphrase,
    decrypt_private_key,
    encrypt_private_key,
    generate_key,
)
from tether.pki.loading import sha256_fingerprint
from tether.pki.names import Role, parse_role
from tether.pki.signer import Signer, SoftwareSigner

METADATA = "ca.json"
CERTIFICATE = "ca.crt.pem"
KEY = "ca.key.pem"
ROOT_CERTIFICATE = "root.crt.pem"
REVOKED = "revoked.json"
CRL = "crl.pem"
ROOT_CRL_NEXT_UPDATE = timedelta(days=30)
ISSUING_CRL_NEXT_UPDATE = timedelta(days=7)
_MAX_METADATA_BYTES = 1024 * 1024

Kind = Literal["root", "issuing"]


@dataclass(frozen=True)
class KeyReference:
    """Where a CA key lives: ``type`` "file" with a ``path`` relative to the CA directory."""

    type: str
    path: str

    def to_json(self) -> dict[str, str]:
        """The ``ca.json`` form."""
        return {"type": self.type, "path": self.path}


@dataclass(frozen=True)
class CaMetadata:
    """The contents of ``ca.json``."""

    kind: Kind
    role: Role | None
    key: KeyReference

    def to_json(self) -> dict[str, Any]:
        """The ``ca.json`` form."""
        return {
            "version": 1,
            "kind": self.kind,
            "role": self.role.value if self.role else None,
            "key": self.key.to_json(),
        }


def pem(cert: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return cert.public_bytes(Encoding.PEM)


# --- low-level atomic file helpers -------------------------------------------------------


def _write_fd(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_path(directory: Path, name: str) -> Iterator[Path]:
    tmp = directory / f".{name}.{os.urandom(6).hex()}.tmp"
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename); the old content survives a crash."""
    try:
        with _temp_path(path.parent, path.name) as tmp:
            _write_fd(tmp, data, mode)
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise CaStorageError(f"cannot write {path}: {exc.strerror}; nothing changed") from exc


def ensure_absent(path: Path) -> None:
    """Raise ``CaDirectoryExistsError`` if ``path`` exists (checked before reading secrets)."""
    if path.exists() or path.is_symlink():
        raise CaDirectoryExistsError(f"{path} already exists; choose another output path")


def write_new_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` with ``data`` atomically; never replaces an existing file."""
    ensure_absent(path)
    if not path.parent.is_dir():
        raise CaDirectoryNotFoundError(f"the directory {path.parent} does not exist")
    try:
        with _temp_path(path.parent, path.name) as tmp:
            _write_fd(tmp, data, mode)
            os.link(tmp, path)  # fails with EEXIST instead of replacing
        _fsync_dir(path.parent)
    except FileExistsError:
        raise CaDirectoryExistsError(f"{path} already exists; choose another output path") from None
    except OSError as exc:
        raise CaStorageError(f"cannot write {path}: {exc.strerror}; nothing written") from exc


def _read_limited(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        raise CaDirectoryError(f"the CA directory has no {what} ({path})") from None
    except OSError as exc:
        raise CaDirectoryError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > _MAX_METADATA_BYTES:
        raise CaDirectoryError(f"{path} is too large to be a CA {what}")
    return data


def create_directory(target: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write ``files`` (name -> (data, mode)) into a new directory ``target``, all or nothing."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CaDirectoryExistsError(
            f"{target} already exists and is not empty; a CA directory is never overwritten"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise CaStorageError(f"cannot create {target}: {exc.strerror}") from exc
    try:
        for name, (data, mode) in files.items():
            _write_fd(tmp / name, data, mode)
        _fsync_dir(tmp)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise CaDirectoryExistsError(
                f"{target} already exists; a CA directory is never overwritten"
            ) from None
        raise CaStorageError(f"cannot create {target}: {exc.strerror}; nothing written") from exc


# --- revocation list file ----------------------------------------------------------------


def _revoked_json(entries: list[dict[str, Any]]) -> bytes:
    return (json.dumps({"version": 1, "revoked": entries}, indent=2) + "\n").encode()


def _entry_from_json(item: dict[str, Any]) -> RevokedEntry:
    reason = item.get("reason")
    return RevokedEntry(
        serial_number=int(item["serial_number"]),
        revoked_at=datetime.fromisoformat(item["revoked_at"]),
        reason=x509.ReasonFlags[reason] if reason else None,
    )


# --- the CA directory --------------------------------------------------------------------


class CaDirectory:
    """An opened CA directory: metadata and certificate; the key is opened on demand."""

    def __init__(self, path: Path, metadata: CaMetadata, certificate: x509.Certificate) -> None:
        self.path = path
        self.metadata = metadata
        self.certificate = certificate

    @classmethod
    def open(cls, path: Path) -> CaDirectory:
        """Read ``ca.json`` and ``ca.crt.pem`` from ``path`` (no secret needed).

        Raises ``CaDirectoryNotFoundError`` for a missing directory and ``CaDirectoryError``
        for one that is not a readable Tether CA directory.
        """
        if not path.is_dir():
            raise CaDirectoryNotFoundError(f"no CA directory at {path}")
        try:
            raw = json.loads(_read_limited(path / METADATA, "metadata"))
            kind = raw["kind"]
            if kind not in ("root", "issuing"):
                raise ValueError(f"unknown kind {kind!r}")
            role = parse_role(raw["role"]) if raw.get("role") else None
            key = raw["key"]
            reference = KeyReference(type=str(key["type"]), path=str(key.get("path", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise CaDirectoryError(f"{path / METADATA} is not valid CA metadata: {exc}") from None
        try:
            certificate = x509.load_pem_x509_certificate(
                _read_limited(path / CERTIFICATE, "certificate")
            )
        except ValueError as exc:
            raise CaDirectoryError(f"{path / CERTIFICATE} is not a certificate: {exc}") from None
        return cls(path, CaMetadata(kind=kind, role=role, key=reference), certificate)

    @property
    def kind(self) -> Kind:
        """ "root" or "issuing"."""
        return self.metadata.kind

    def signer(self, passphrase: str) -> Signer:
        """A signer for the CA key; the key reference type decides how it is opened."""
        reference = self.metadata.key
        if reference.type != "file":
            raise UnknownKeyReferenceError(
                f"{self.path / METADATA} names a key of type {reference.type!r}; this version "
                "of Tether opens only 'file' keys"
            )
        if not reference.path or Path(reference.path).name != reference.path:
            raise CaDirectoryError(
                f"the key path {reference.path!r} must be a file name inside {self.path}"
            )
        data = _read_limited(self.path / reference.path, "key")
        return SoftwareSigner(decrypt_private_key(data, passphrase))

    def root(self, passphrase: str) -> RootCA:
        """The root CA with its key opened (``WrongPassphraseError`` on a bad passphrase)."""
        if self.kind != "root":
            raise CaDirectoryError(f"{self.path} is an issuing CA, not a root CA directory")
        return RootCA(self.certificate, self.signer(passphrase))

    def issuing(self, passphrase: str) -> IssuingCA:
        """The issuing CA with its key opened (``WrongPassphraseError`` on a bad passphrase)."""
        if self.kind != "issuing":
            raise CaDirectoryError(f"{self.path} is a root CA, not an issuing CA directory")
        return IssuingCA(self.certificate, self.signer(passphrase))

    def root_certificate(self) -> x509.Certificate:
        """The root certificate: this CA's own (root) or the stored issuer (issuing)."""
        if self.kind == "root":
            return self.certificate
        try:
            return x509.load_pem_x509_certificate(
                _read_limited(self.path / ROOT_CERTIFICATE, "root certificate")
            )
        except ValueError as exc:
            raise CaDirectoryError(f"{self.path / ROOT_CERTIFICATE} is damaged: {exc}") from None

    def _revoked_raw(self) -> list[dict[str, Any]]:
        try:
            raw = json.loads(_read_limited(self.path / REVOKED, "revocation list"))
            entries = raw["revoked"]
            if not isinstance(entries, list):
                raise TypeError("'revoked' is not a list")
            for item in entries:
                _entry_from_json(item)
        except (ValueError, KeyError, TypeError) as exc:
            raise CaDirectoryError(f"{self.path / REVOKED} is damaged: {exc}") from None
        return entries

    def revoked(self) -> list[RevokedEntry]:
        """The entries of ``revoked.json``."""
        return [_entry_from_json(item) for item in self._revoked_raw()]

    def _signing_ca(self, passphrase: str) -> RootCA | IssuingCA:
        return self.root(passphrase) if self.kind == "root" else self.issuing(passphrase)

    def _build_crl(
        self, ca: RootCA | IssuingCA, revoked: list[RevokedEntry]
    ) -> x509.CertificateRevocationList:
        next_update = ROOT_CRL_NEXT_UPDATE if self.kind == "root" else ISSUING_CRL_NEXT_UPDATE
        return ca.build_crl(revoked, next_update=next_update)

    def refresh_crl(self, passphrase: str) -> x509.CertificateRevocationList:
        """Re-sign the CRL from ``revoked.json`` and replace ``crl.pem``."""
        ca = self._signing_ca(passphrase)
        crl = self._build_crl(ca, self.revoked())
        replace_file(self.path / CRL, crl.public_bytes(Encoding.PEM))
        return crl

    def revoke(
        self,
        cert: x509.Certificate,
        passphrase: str,
        *,
        reason: x509.ReasonFlags | None = None,
        require_ca: bool = False,
    ) -> x509.CertificateRevocationList:
        """Put ``cert`` (issued by this CA) on the revocation list and re-sign the CRL.

        Refuses a certificate this CA did not sign (``NotIssuedByThisCaError``) and one
        already revoked (``AlreadyRevokedError``); with ``require_ca`` the certificate must be
        a CA (revoking issuing CAs from the root). Everything is checked and the CRL signed
        before the first byte is written.
        """
        ca = self._signing_ca(passphrase)
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            raise NotIssuedByThisCaError(
                f"the certificate {cert.subject.rfc4514_string()!r} was not issued by this CA "
                f"({self.certificate.subject.rfc4514_string()})"
            ) from None
        if require_ca:
            try:
                is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise NotIssuedByThisCaError("the certificate is not an issuing CA certificate")
        raw = self._revoked_raw()
        if any(int(item["serial_number"]) == cert.serial_number for item in raw):
            raise AlreadyRevokedError(
                f"serial {cert.serial_number:x} is already revoked by this CA; nothing changed"
            )
        now = datetime.now(UTC).replace(microsecond=0)
        raw.append(
            {
                "serial_number": str(cert.serial_number),
                "revoked_at": now.isoformat(),
                "reason": reason.name if reason else None,
                "subject": cert.subject.rfc4514_string(),
                "fingerprint": sha256_fingerprint(cert),
            }
        )
        crl = self._build_crl(ca, [_entry_from_json(item) for item in raw])
        # revoked.json is the source of truth and goes first; a crash before the CRL is
        # replaced is healed by the next `tether ca crl`.
        replace_file(self.path / REVOKED, _revoked_json(raw))
        replace_file(self.path / CRL, crl.public_bytes(Encoding.PEM))
        return crl


def _ca_files(
    kind: Kind,
    certificate: x509.Certificate,
    key_pem: bytes,
    crl: x509.CertificateRevocationList,
    role: Role | None,
    root: x509.Certificate | None,
) -> dict[str, tuple[bytes, int]]:
    metadata = CaMetadata(kind=kind, role=role, key=KeyReference(type="file", path=KEY))
    files = {
        KEY: (key_pem, 0o600),
        CERTIFICATE: (pem(certificate), 0o644),
        REVOKED: (_revoked_json([]), 0o644),
        CRL: (crl.public_bytes(Encoding.PEM), 0o644),
        METADATA: ((json.dumps(metadata.to_json(), indent=2) + "\n").encode(), 0o644),
    }
    if root is not None:
        files[ROOT_CERTIFICATE] = (pem(root), 0o644)
    return files


def init_root(
    path: Path,
    passphrase: str,
    *,
    common_name: str = "Tether Root CA",
    validity: timedelta = timedelta(days=20 * 365),
) -> CaDirectory:
    """Create a root CA directory at ``path`` (the offline ceremony).

    Refuses an existing non-empty ``path`` (``CaDirectoryExistsError``) and a weak
    passphrase; everything is validated before anything is written.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CaDirectoryExistsError(
            f"{path} already exists and is not empty; a CA directory is never overwritten"
        )
    check_new_passphrase(passphrase)
    key = generate_key()
    root = RootCA.self_sign(SoftwareSigner(key), common_name=common_name, validity=validity)
    crl = root.build_crl([], next_update=ROOT_CRL_NEXT_UPDATE)
    files = _ca_files(
        "root", root.certificate, encrypt_private_key(key, passphrase), crl, None, None
    )
    create_directory(path, files)
    return CaDirectory.open(path)


def init_issuing(
    path: Path,
    root_dir: CaDirectory,
    root_passphrase: str,
    passphrase: str,
    *,
    common_name: str,
    role: Role,
    validity: timedelta = timedelta(days=5 * 365),
    root_crl_url: str | None = None,
) -> CaDirectory:
    """Create an issuing CA directory at ``path``, signed by the root in ``root_dir``.

    ``root_crl_url`` (where the root's CRL is published) goes into the certificate as its
    CRL distribution point.

    The new key is encrypted with ``passphrase``; the root key is opened with
    ``root_passphrase`` (``WrongPassphraseError``). Nothing is written unless all succeeds.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CaDirectoryExistsError(
            f"{path} already exists and is not empty; a CA directory is never overwritten"
        )
    check_new_passphrase(passphrase)
    role = parse_role(role)
    root = root_dir.root(root_passphrase)
    key = generate_key()
    cert = root.issue_intermediate(
        key.public_key(),
        common_name=common_name,
        role=role,
        validity=validity,
        crl_url=root_crl_url,
    )
    issuing = IssuingCA(cert, SoftwareSigner(key))
    crl = issuing.build_crl([], next_update=ISSUING_CRL_NEXT_UPDATE)
    files = _ca_files(
        "issuing", cert, encrypt_private_key(key, passphrase), crl, role, root.certificate
    )
    create_directory(path, files)
    return CaDirectory.open(path)
