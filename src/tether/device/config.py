"""What a device needs to connect: its identity (certificate + key source) and the cloud.

These are frozen values built once by the CLI (or a caller) and passed down. ``DeviceIdentity``
is made with ``DeviceIdentity.load`` so the serial always comes from the certificate's subject
CN, never from a flag: the MQTT client id must equal the certificate's device id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.device.errors import BadCertificateError, DeviceFileNotFoundError
from tether.errors import InvalidInputError, PolicyViolationError
from tether.pki.names import is_server_ca

MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileKey:
    """The software emulator: the private key is a PEM file (readable, so not a secure element)."""

    path: Path


@dataclass(frozen=True)
class Pkcs11Key:
    """A key inside a PKCS#11 token: module path, token label, key label and the user PIN."""

    module: str
    token_label: str
    key_label: str
    pin: str = field(repr=False)


KeySource = FileKey | Pkcs11Key


def read_small_file(path: Path, what: str) -> bytes:
    """Read ``path`` or raise ``file_not_found`` saying which file (``what``) is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DeviceFileNotFoundError(f"the {what} {path} does not exist: check the path") from exc
    except OSError as exc:
        raise DeviceFileNotFoundError(
            f"cannot read the {what} {path}: {exc.strerror}; check the path and permissions"
        ) from exc
    if len(data) > MAX_PEM_BYTES:
        raise InvalidInputError(f"the {what} {path} is larger than a certificate or key can be")
    return data


def load_pem_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """All PEM certificates in ``path``; at least one, else ``bad_certificate``."""
    data = read_small_file(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise BadCertificateError(
            f"the {what} {path} is not a PEM X.509 certificate: give the PEM file "
            "(-----BEGIN CERTIFICATE-----)"
        ) from exc
    return certificates


def load_trust_anchors(path: Path) -> list[x509.Certificate]:
    """The CAs the device trusts for the cloud: the server CAs in the pinned file.

    The pinned file (``DATA/pinned-ca.pem``) holds the server issuing CA(s) and the root,
    so that any standard client (mosquitto, openssl) can build the chain. This agent trusts
    only its server CAs as anchors: a server certificate from any other issuing CA of the
    same root (factory, device, service) never verifies, even from a CA that carries no
    extendedKeyUsage. A file without a server CA (an older data directory: the root alone)
    is trusted as it is. Several server CAs may be pinned at once: that is how the server CA
    is rolled over (README).
    """
    pinned = load_pem_certificates(path, "pinned CA file")
    servers = [c for c in pinned if is_server_ca(c)]
    return servers or pinned


def certificate_serial(certificate: x509.Certificate, path: Path) -> str:
    """The device serial: the subject CN, which must be present and unique."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise BadCertificateError(
            f"the device certificate {path} has no single subject CN: a Tether device "
            "certificate names the device serial in its CN"
        )
    return names[0].value


@dataclass(frozen=True)
class DeviceIdentity:
    """A device: its serial (from the certificate CN), certificate file and key source."""

    serial: str
    certificate: Path
    key: KeySource

    @classmethod
    def load(cls, certificate: Path, key: KeySource) -> DeviceIdentity:
        """Read ``certificate`` and build the identity; the serial comes from its subject CN.

        Refuses a missing or unreadable file (``file_not_found``), a file that is not a PEM
        certificate or has no CN (``bad_certificate``), a non-P-256 key (``policy_violation``)
        and, for ``FileKey``, a missing key file. Whether the key matches the certificate is
        checked by ``tether.device.keys.check_key`` (it may need the token).
        """
        cert = load_pem_certificates(certificate, "device certificate")[0]
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise PolicyViolationError(
                f"the device certificate {certificate} is not ECDSA P-256: Tether devices use P-256"
            )
        if isinstance(key, FileKey) and not key.path.is_file():
            raise DeviceFileNotFoundError(
                f"the device key file {key.path} does not exist: check the --key path"
            )
        if isinstance(key, Pkcs11Key) and not (key.module and key.token_label and key.key_label):
            raise InvalidInputError(
                "a PKCS#11 key needs the module path, the token label and the key label"
            )
        return cls(serial=certificate_serial(cert, certificate), certificate=certificate, key=key)

    def load_certificate(self) -> x509.Certificate:
        """The device certificate (the first one in the file)."""
        return load_pem_certificates(self.certificate, "device certificate")[0]


@dataclass(frozen=True, kw_only=True)
class CloudEndpoint:
    """The cloud's MQTT endpoint and the one CA the device trusts for it.

    ``server_name`` is the name the server certificate must carry (SNI and host check);
    ``None`` means ``host``.
    """

    host: str
    port: int = 8883
    pinned_ca: Path
    server_name: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise InvalidInputError("the cloud host is empty: pass --host")
        if not 0 < self.port < 65536:
            raise InvalidInputError(f"port {self.port} is not a TCP port (1-65535)")

    @property
    def expected_name(self) -> str:
        """The name the server certificate is checked against."""
        return self.server_name or self.host
