"""A software emulator of a secure element, for a quick start without hardware.

The keys are ordinary files on the host: encrypted PKCS#8 (``<label>.key.pem``) next to
the certificate (``<label>.crt.pem``) in one directory (mode 0700, files 0600). It offers the
same interface as a token but none of its protection: anyone with the files and the
passphrase has the key.

How it says that it is an emulator (no printing from domain code): ``is_emulator`` is true,
for the CLI and the console to show a banner; and every operation logs a WARNING on the
logger ``tether.secure_element.emulator`` (``EMULATOR_LOGGER``). With no logging
configured, Python's last-resort handler prints that warning to stderr, so the message is
seen even by a caller that never looks at ``is_emulator``; the CLI may route or format it.

The passphrase is checked on ``open`` against an scrypt verifier in ``emulator.json``, so a
wrong passphrase fails at once and the same way whether or not any key exists yet.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tether.errors import InvalidInputError
from tether.secure_element.base import (
    ClosesOnExit,
    KeyProtection,
    SecureElementSigner,
    check_certificate_matches,
    require_p256,
    validate_digest,
    validate_label,
)
from tether.secure_element.errors import (
    ElementClosedError,
    EmulatorStoreError,
    EmulatorWrongPassphraseError,
    KeyNotFoundError,
    LabelInUseError,
    UnsupportedKeyError,
)

EMULATOR_LOGGER = "tether.secure_element.emulator"
_LOG = logging.getLogger(EMULATOR_LOGGER)

_MARKER = "emulator.json"
_FORMAT = "tether-se-emulator/1"
_KEY_SUFFIX = ".key.pem"
_CERT_SUFFIX = ".crt.pem"
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _write_private_file(path: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600 atomically; refuse to overwrite unless ``replace``.

    The data goes to a temporary file first, so a crash never leaves a half-written key or
    certificate; ``os.link`` publishes it only if ``path`` does not exist yet.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError if someone else created it meanwhile
    finally:
        tmp.unlink(missing_ok=True)


class EmulatedSecureElement(ClosesOnExit):
    """A ``SecureElement`` whose keys are passphrase-encrypted PKCS#8 files: not secure hardware.

    Open with ``EmulatedSecureElement.open(directory, passphrase)``; a new or empty
    directory is initialised. Decrypted keys are cached in memory until ``close``.
    """

    def __init__(self, directory: Path, passphrase: str) -> None:
        """Internal: use ``open``, which checks the passphrase."""
        self._directory = directory
        self._passphrase = passphrase
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._closed = False

    @classmethod
    def open(cls, directory: Path, passphrase: str) -> Self:
        """Open (or create) the emulator in ``directory`` with ``passphrase``.

        Creates the directory (0700) and its verifier if new or empty. Raises
        ``EmulatorWrongPassphraseError`` for a wrong passphrase, ``EmulatorStoreError`` if
        the directory is not an emulator's or cannot be read or written, and
        ``InvalidInputError`` for an empty passphrase.
        """
        if not passphrase:
            raise InvalidInputError(
                "The emulator needs a non-empty passphrase to encrypt its keys.",
                code="se_emulator_empty_passphrase",
            )
        directory = Path(directory)
        try:
            if directory.exists() and not directory.is_dir():
                raise EmulatorStoreError(
                    f"{directory} is a file, not an emulator directory; choose a directory."
                )
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker = directory / _MARKER
            if not marker.exists():
                if any(directory.iterdir()):
                    raise EmulatorStoreError(
                        f"{directory} is not empty and holds no {_MARKER}; it is not an emulated "
                        "secure element. Choose an empty or new directory."
                    )
                cls._initialise(marker, passphrase)
            cls._verify(marker, passphrase)
        except OSError as exc:
            raise EmulatorStoreError(
                f"Cannot use {directory} as the emulator directory: {exc.strerror or exc}. "
                "Check that it exists and is readable and writable by this user."
            ) from exc
        element = cls(directory, passphrase)
        element._announce("opened")
        return element

    @staticmethod
    def _initialise(marker: Path, passphrase: str) -> None:
        salt = secrets.token_bytes(16)
        verifier = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
        doc = {
            "format": _FORMAT,
            "kdf": {"name": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P},
            "salt": _b64(salt),
            "verifier": _b64(verifier),
        }
        _write_private_file(marker, json.dumps(doc).encode("utf-8"), replace=False)

    @staticmethod
    def _verify(marker: Path, passphrase: str) -> None:
        try:
            doc = json.loads(marker.read_text("utf-8"))
            if doc["format"] != _FORMAT or doc["kdf"]["name"] != "scrypt":
                raise ValueError(f"unknown format {doc.get('format')!r}")
            kdf = doc["kdf"]
            salt = base64.b64decode(doc["salt"], validate=True)
            expected = base64.b64decode(doc["verifier"], validate=True)
            actual = _derive(passphrase, salt, int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EmulatorStoreError(
                f"{marker} is corrupt ({exc}); restore it from a backup or start a new "
                "emulator directory."
            ) from exc
        if not hmac.compare_digest(expected, actual):
            raise EmulatorWrongPassphraseError(
                f"The passphrase does not open the emulated secure element in {marker.parent}. "
                "Check the passphrase (env var or file) you gave."
            )

    @property
    def is_emulator(self) -> bool:
        return True

    @property
    def directory(self) -> Path:
        """The directory holding the key and certificate files."""
        return self._directory

    def _announce(self, action: str) -> None:
        _LOG.warning(
            "EMULATED secure element %s (%s): keys are files on this host, not in a secure "
            "element; use only for a quick start.",
            self._directory,
            action,
        )

    def _use(self, action: str) -> None:
        if self._closed:
            raise ElementClosedError(
                f"The emulated secure element in {self._directory} is closed; open it again."
            )
        self._announce(action)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._keys.clear()
        self._closed = True

    # -- files -------------------------------------------------------------------------

    def _key_path(self, label: str) -> Path:
        return self._directory / f"{label}{_KEY_SUFFIX}"

    def _cert_path(self, label: str) -> Path:
        return self._directory / f"{label}{_CERT_SUFFIX}"

    def _store_error(self, what: str, exc: BaseException) -> EmulatorStoreError:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return EmulatorStoreError(
            f"Cannot {what} in the emulator directory {self._directory}: {detail}. Check the "
            "directory's permissions and free space."
        )

    def _private_key(self, label: str) -> ec.EllipticCurvePrivateKey:
        validate_label(label)
        cached = self._keys.get(label)
        if cached is not None:
            return cached
        path = self._key_path(label)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise KeyNotFoundError(
                f"No key labelled {label!r} in the emulator {self._directory}. Generate it "
                "first or check the label (see labels())."
            ) from None
        except OSError as exc:
            raise self._store_error(f"read key {label!r}", exc) from exc
        try:
            key = serialization.load_pem_private_key(pem, self._passphrase.encode("utf-8"))
        except (ValueError, TypeError) as exc:
            raise EmulatorStoreError(
                f"The key file {path} cannot be decrypted with this emulator's passphrase or is "
                "corrupt; restore it from a backup or delete it and generate a new key."
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise UnsupportedKeyError(
                f"The key file {path} does not hold an ECDSA P-256 key; Tether only uses P-256."
            )
        self._keys[label] = key
        return key

    # -- SecureElement -----------------------------------------------------------------

    def generate_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key and write it encrypted (PKCS#8, the passphrase) with mode 0600.

        ``LabelInUseError`` if a key or certificate file with this label exists.
        """
        validate_label(label)
        self._use(f"generate key {label}")
        if self._key_path(label).exists() or self._cert_path(label).exists():
            raise LabelInUseError(
                f"The emulator {self._directory} already has a key labelled {label!r}; nothing "
                "was generated. Use another label or delete the old key first."
            )
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase.encode("utf-8")),
        )
        try:
            _write_private_file(self._key_path(label), pem, replace=False)
        except FileExistsError:
            raise LabelInUseError(
                f"A key labelled {label!r} was created in {self._directory} meanwhile; "
                "nothing was generated."
            ) from None
        except OSError as exc:
            raise self._store_error(f"write key {label!r}", exc) from exc
        self._keys[label] = key
        return key.public_key()

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public half of the key under ``label``; ``KeyNotFoundError`` if absent."""
        validate_label(label)
        self._use(f"read public key {label}")
        return self._private_key(label).public_key()

    def sign_digest(self, label: str, digest: bytes) -> bytes:
        """ECDSA over a 32-byte SHA-256 ``digest``; DER signature."""
        validate_digest(digest)
        validate_label(label)
        self._use(f"sign with {label}")
        key = self._private_key(label)
        return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    def signer(self, label: str) -> SecureElementSigner:
        """A ``Signer`` over the key; every signature is logged as an emulator use."""
        self._private_key(label)
        return SecureElementSigner(self, label)

    def store_certificate(self, label: str, cert: x509.Certificate) -> None:
        """Store (or replace) the key's certificate as PEM, mode 0600, atomically.

        ``CertificateMismatchError`` if ``cert`` certifies another public key.
        """
        validate_label(label)
        self._use(f"store certificate {label}")
        check_certificate_matches(label, self._private_key(label).public_key(), cert)
        try:
            _write_private_file(
                self._cert_path(label), cert.public_bytes(serialization.Encoding.PEM), replace=True
            )
        except OSError as exc:
            raise self._store_error(f"write the certificate of {label!r}", exc) from exc

    def certificate(self, label: str) -> x509.Certificate | None:
        """The stored certificate, or None; ``KeyNotFoundError`` if there is no such key."""
        validate_label(label)
        self._use(f"read certificate {label}")
        self._private_key(label)
        try:
            pem = self._cert_path(label).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._store_error(f"read the certificate of {label!r}", exc) from exc
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise EmulatorStoreError(
                f"The certificate file {self._cert_path(label)} is corrupt; store the "
                "certificate again."
            ) from exc
        require_p256(cert.public_key(), f"in the certificate file for {label!r}")
        return cert

    def labels(self) -> list[str]:
        """Labels of all keys in the directory, sorted."""
        self._use("list keys")
        try:
            names = [p.name for p in self._directory.iterdir()]
        except OSError as exc:
            raise self._store_error("list keys", exc) from exc
        return sorted(n[: -len(_KEY_SUFFIX)] for n in names if n.endswith(_KEY_SUFFIX))

    def describe_key(self, label: str) -> str:
        """``emulator:<absolute path of the key file>``: says plainly the key is a file."""
        validate_label(label)
        self._use(f"describe key {label}")
        path = self._key_path(label)
        if not path.exists():
            raise KeyNotFoundError(f"No key labelled {label!r} in the emulator {self._directory}.")
        return f"emulator:{path.resolve()}"

    def key_protection(self, label: str) -> KeyProtection:
        """The honest answer: the key is a passphrase-encrypted file on this host, no hardware.

        The token flags stay None: there is no token to report them. Changes nothing.
        """
        location = self.describe_key(label)
        return KeyProtection(
            location=location,
            is_emulator=True,
            summary=(
                f"EMULATED secure element: the key is a passphrase-encrypted PKCS#8 file "
                f"({self._key_path(label).resolve()}) on this host, not in a secure element. "
                "Anyone with the file and the passphrase has the key; use it only for a "
                "quick start."
            ),
        )

    def delete(self, label: str) -> None:
        """Remove the key and certificate files under ``label``; ``KeyNotFoundError`` if absent."""
        validate_label(label)
        self._use(f"delete key {label}")
        if not self._key_path(label).exists():
            raise KeyNotFoundError(f"No key labelled {label!r} in the emulator {self._directory}.")
        try:
            self._cert_path(label).unlink(missing_ok=True)
            self._key_path(label).unlink()
        except OSError as exc:
            raise self._store_error(f"delete key {label!r}", exc) from exc
        self._keys.pop(label, None)
