"""The one test PKI, in the spirit of trustme: ``TestPKI().device("S")``.

Valid Tether certificates come from ``tether.pki`` so every test exercises the real profile:

    pki = TestPKI("Tether Test Root")
    device = pki.device("SN-1")                  # under the DEVICE issuing CA (made on demand)
    server = pki.server("localhost", "127.0.0.1")  # chain: leaf, then the SERVER issuing CA
    files = device.write(tmp_path, "device")     # PEM files; ``files.cert_path``, ``.key_path``

What ``tether.pki`` refuses to make on purpose (the refusal and attack tests need it) is
built here too, raw: :func:`raw_ca` (a CA whose subject is a bare CN, self-signed or under
another), :func:`raw_leaf` (any name, key, EKU, validity, serial number, forged issuer),
:func:`self_signed_leaf` (an impostor), :func:`hostile_leaf` and :func:`hostile_server`
(signed by a real ``IssuingCA``'s signer with one attribute bent). Every builder returns an
:class:`Issued`; keys are made per run and nothing is checked in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki import IssuingCA, Role, RootCA, SoftwareSigner, generate_key, sign_certificate
from tether.pki.store import init_issuing, init_root

NOW = dt.datetime.now(dt.UTC)

PrivateKey = ec.EllipticCurvePrivateKey


def pem(*certificates: x509.Certificate) -> bytes:
    """``certificates`` as concatenated PEM (leaf first for a chain)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def key_pem(key: Any) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (any key type cryptography serialises)."""
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass(frozen=True)
class Issued:
    """A certificate, its key (``None`` when the key lives in a token) and its chain.

    ``write`` puts it on disk once and returns the same value with ``cert_path`` (leaf then
    ``chain``) and ``key_path`` (PKCS#8, mode 0600) set; reading a path of an unwritten value
    fails the test with a message instead of returning ``None``.
    """

    certificate: x509.Certificate
    key: Any = None  # any private key: P-256 mostly, RSA or P-384 for refusal tests
    chain: tuple[x509.Certificate, ...] = ()  # issuing CAs after the leaf
    files: tuple[Path, Path | None] | None = None

    @property
    def pem(self) -> bytes:
        """The certificate and its chain as PEM."""
        return pem(self.certificate, *self.chain)

    @property
    def cert_path(self) -> Path:
        assert self.files is not None, "write() this Issued before asking for its files"
        return self.files[0]

    @property
    def key_path(self) -> Path:
        assert self.files is not None, "write() this Issued before asking for its files"
        assert self.files[1] is not None, "this Issued has no key file (its key is in a token)"
        return self.files[1]

    def write(self, directory: Path, stem: str) -> Issued:
        """Write ``<stem>.crt.pem`` (and ``<stem>.key.pem`` when there is a key)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{stem}.crt.pem"
        cert_path.write_bytes(self.pem)
        key_path = None
        if self.key is not None:
            key_path = directory / f"{stem}.key.pem"
            key_path.write_bytes(key_pem(self.key))
            key_path.chmod(0o600)
        return dataclasses.replace(self, files=(cert_path, key_path))


class TestPKI:
    """A Tether root (``tether.pki``) with one issuing CA per role, each made when first asked.

    ``ca(role)`` is that role's ``IssuingCA``; ``ca(role, name)`` another one of the same role
    (a stranger, a rogue). Leaves come from the real issuance paths.
    """

    __test__ = False  # a helper, not a test class

    def __init__(self, root_name: str = "Tether Test Root", *, ca_names: str = "") -> None:
        """``ca_names`` prefixes the default issuing CA names (``"<prefix> Device CA"``...)."""
        self.root_key = generate_key()
        self.root = RootCA.self_sign(SoftwareSigner(self.root_key), common_name=root_name)
        self._prefix = ca_names or root_name.removesuffix(" Root CA").removesuffix(" Root")
        self._cas: dict[str, tuple[IssuingCA, PrivateKey]] = {}

    @property
    def root_issued(self) -> Issued:
        """The root certificate with its key (what clients pin; raw CAs can hang under it)."""
        return Issued(self.root.certificate, self.root_key)

    def ca(self, role: Role = Role.DEVICE, name: str | None = None) -> IssuingCA:
        """The issuing CA of ``role`` (``name`` picks another one), made on first use."""
        common_name = name or f"{self._prefix} {role.value.capitalize()} CA"
        if common_name not in self._cas:
            key = generate_key()
            certificate = self.root.issue_intermediate(
                key.public_key(), common_name=common_name, role=role
            )
            self._cas[common_name] = (IssuingCA(certificate, SoftwareSigner(key)), key)
        ca, key = self._cas[common_name]
        assert ca.role is role, f"{common_name!r} was made for {ca.role}, not {role}"
        return ca

    def ca_issued(self, role: Role = Role.DEVICE, name: str | None = None) -> Issued:
        """``ca(role, name)``'s certificate with its key (for CA directories and files)."""
        ca = self.ca(role, name)
        return Issued(ca.certificate, self._cas[_cn(ca.certificate)][1])

    def device(
        self,
        serial: str,
        *,
        ca: IssuingCA | None = None,
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> Issued:
        """A device certificate for ``serial``; a fresh key unless ``public_key`` (a token's)."""
        ca = ca or self.ca(Role.DEVICE)
        key = None if public_key is not None else generate_key()
        public = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
        return Issued(ca.issue_device_certificate_for_key(public, serial), key)

    def server(
        self, dns_name: str = "localhost", ip: str = "127.0.0.1", *, ca: IssuingCA | None = None
    ) -> Issued:
        """A server certificate (serverAuth, SAN ``dns_name`` + ``ip``), chained to its CA."""
        ca = ca or self.ca(Role.SERVER)
        key = generate_key()
        certificate = ca.issue_server_certificate(
            key.public_key(), dns_names=[dns_name], ip_addresses=[ipaddress.ip_address(ip)]
        )
        return Issued(certificate, key, (ca.certificate,))

    def service(self, name: str, *, ca: IssuingCA | None = None) -> Issued:
        """A back-end service certificate for ``name`` under the SERVICE issuing CA."""
        ca = ca or self.ca(Role.SERVICE)
        key = generate_key()
        return Issued(ca.issue_service_certificate(key.public_key(), name=name), key)


def _cn(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# -- deliberately non-Tether certificates ------------------------------------------------


def cn_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """The profile's keyUsage for a CA or a leaf, so a raw certificate differs only on purpose."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def p384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def raw_ca(
    common_name: str,
    issuer: Issued | None = None,
    *,
    key: PrivateKey | None = None,
    path_length: int | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A CA whose subject is CN=``common_name`` only: self-signed unless ``issuer`` is given.

    For look-alike and foreign CAs, and where a test pins a bare-CN issuer name. Under an
    ``issuer`` the path length defaults to 0.
    """
    key = key or generate_key()
    signer = issuer.key if issuer is not None else key
    assert signer is not None, "a CA signed by an issuer needs the issuer's key"
    if issuer is not None and path_length is None:
        path_length = 0
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer is not None else cn_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def raw_leaf(
    ca: Issued,
    common_name: str,
    *,
    key: Any = None,
    server: bool = False,
    client_auth: bool = True,
    usages: Sequence[x509.ObjectIdentifier] | None = None,
    issuer_name: x509.Name | None = None,
    authority_key: ec.EllipticCurvePublicKey | None = None,
    not_after: dt.datetime | None = None,
    serial_number: int | None = None,
    san: x509.SubjectAlternativeName | None = None,
    subject_key_id: bool = True,
) -> Issued:
    """An end-entity certificate CN=``common_name`` signed by ``ca``'s key, no checks at all.

    Any name (also ones the profile refuses), any ``key`` (P-384, RSA), any validity and
    serial number. ``server`` makes a serverAuth leaf for localhost/127.0.0.1 chained to
    ``ca``; otherwise clientAuth (or codeSigning when ``client_auth`` is False) unless
    ``usages`` says. ``issuer_name`` and ``authority_key`` forge the issuer.
    """
    assert ca.key is not None, "raw_leaf signs with the CA's key"
    key = key or generate_key()
    if usages is None:
        if server:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        elif client_auth:
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        else:
            usages = [ExtendedKeyUsageOID.CODE_SIGNING]
    if server and san is None:
        san = x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(issuer_name or ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority_key or ca.key.public_key()
            ),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if subject_key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    chain = (ca.certificate,) if server else ()
    return Issued(builder.sign(ca.key, hashes.SHA256()), key, chain)


def self_signed_leaf(common_name: str, key: PrivateKey | None = None) -> Issued:
    """A self-signed clientAuth certificate carrying ``common_name``: an impostor."""
    key = key or generate_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(cn_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def hostile_leaf(
    ca: IssuingCA,
    serial: str,
    *,
    key: Any = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    is_ca: bool = False,
    claimed_issuer: x509.Certificate | None = None,
    key_usage: x509.KeyUsage | bool | None = True,
    basic_constraints: bool = True,
    extra_subject: tuple[x509.NameAttribute, ...] = (),
    san: x509.SubjectAlternativeName | None = None,
) -> Issued:
    """A client certificate genuinely signed by ``ca`` (its ``Signer``) with one attribute bent.

    ``tether.pki`` refuses to issue these, which is the point; an attacker is not so polite.
    ``key`` may be any private key (RSA, P-384...); the default is a fresh P-256 key.
    ``claimed_issuer`` forges the issuer name and key identifier: the certificate names that
    CA but is signed by ``ca``. ``key_usage`` False leaves keyUsage out (a KeyUsage replaces
    the profile's), ``basic_constraints`` False leaves basicConstraints out,
    ``extra_subject`` adds attributes beside the CN and ``san`` adds a subjectAltName.
    """
    named = claimed_issuer or ca.certificate
    key = key or generate_key()
    profile_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial), *extra_subject])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(named.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                named.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=None), critical=True
        )
    if key_usage is not False and key_usage is not None:
        usage = profile_usage if key_usage is True else key_usage
        builder = builder.add_extension(usage, critical=True)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return Issued(sign_certificate(builder, ca.signer), key)


def hostile_server(
    ca: IssuingCA,
    *,
    dns_name: str = "localhost",
    ip: str = "127.0.0.1",
    not_after: dt.datetime | None = None,
) -> Issued:
    """A serverAuth certificate signed by ``ca`` of any role, chained to it.

    ``not_after`` in the past gives an expired server certificate, which ``tether.pki`` would
    never issue; signed by a client CA it is the certificate a rogue issuing CA would make.
    """
    key = generate_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn_name(dns_name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=10))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address(ip))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    return Issued(sign_certificate(builder, ca.signer), key, (ca.certificate,))


# -- CA directories, as the ceremony makes them ------------------------------------------

CEREMONY_PASSPHRASE = "ceremony passphrase 123"
CEREMONY_ROLES = (Role.SERVER, Role.DEVICE, Role.FACTORY)


def ceremony(base: Path, passphrase: str = CEREMONY_PASSPHRASE) -> dict[str, Path]:
    """A root and one issuing CA directory per role under ``base`` (``tether.pki.store``).

    Keys at rest are encrypted with ``passphrase`` (a deliberately slow KDF), which is why the
    suite makes these once per session (the ``ca_dirs`` fixture) and tests only read them.
    Keys of the dict: ``root`` and each role's value (``server``, ``device``, ``factory``).
    """
    root = init_root(base / "root", passphrase, common_name="Ceremony Root CA")
    dirs = {"root": base / "root"}
    for role in CEREMONY_ROLES:
        init_issuing(
            base / role.value,
            root,
            passphrase,
            passphrase,
            common_name=f"Ceremony {role.value.capitalize()} CA",
            role=role,
        )
        dirs[role.value] = base / role.value
    return dirs
