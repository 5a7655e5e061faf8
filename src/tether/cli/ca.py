"""The ``tether ca`` commands: the root ceremony, issuing CAs, certificates, revocation, CRLs.

Passphrases never come from a command-line argument: ``--*-passphrase-file``, then the
environment (``TETHER_ROOT_PASSPHRASE`` for a root key, ``TETHER_CA_PASSPHRASE`` for an
issuing CA key), then a prompt. A server or service key from ``issue-server`` /
``issue-service`` is written unencrypted with mode 0600: the gateway or the backend loads it
unattended at start, and an encrypted key would only move the secret into its environment.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console

from tether.cli.secrets import read_secret
from tether.pki.errors import CaDirectoryError, InvalidNameError
from tether.pki.files import REVOCATION_REASONS, parse_reason, read_input_file
from tether.pki.keys import generate_key, private_key_pem
from tether.pki.loading import load_certificate, load_csr, sha256_fingerprint
from tether.pki.names import parse_role
from tether.pki.store import (
    CaDirectory,
    ensure_absent,
    init_issuing,
    init_root,
    pem,
    write_new_file,
)
from tether.pki.verification import issue_verification_certificate

ROOT_ENV = "TETHER_ROOT_PASSPHRASE"
CA_ENV = "TETHER_CA_PASSPHRASE"

ca_app = typer.Typer(
    name="ca",
    help="Certificate authorities: the offline root, issuing CAs, certificates, revocation.",
    no_args_is_help=True,
)
_out = Console(highlight=False, soft_wrap=True)

_REASON_HELP = f"Revocation reason: {', '.join(REVOCATION_REASONS)}."
NewRootPassphraseFile = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help=f"New root key passphrase file (or {ROOT_ENV})."),
]
RootPassphraseFile = Annotated[
    Path | None,
    typer.Option("--root-passphrase-file", help=f"Root key passphrase file (or {ROOT_ENV})."),
]
NewCaPassphraseFile = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help=f"New issuing CA key passphrase file (or {CA_ENV})."),
]
CaPassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"CA key passphrase file (or {CA_ENV}; {ROOT_ENV} for a root directory).",
    ),
]
OutCert = Annotated[Path, typer.Option("--out-cert", help="Certificate output (PEM, new file).")]
OutKey = Annotated[Path, typer.Option("--out-key", help="Key output (PEM, 0600, unencrypted).")]


def register(root: typer.Typer) -> None:
    """Add the ``ca`` group to the root app."""
    root.add_typer(ca_app, name="ca")


def _days(days: int | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


def _passphrase(ca: CaDirectory, file: Path | None) -> str:
    if ca.kind == "root":
        return read_secret("root key passphrase", env_var=ROOT_ENV, file=file)
    return read_secret("CA key passphrase", env_var=CA_ENV, file=file)


def _show(what: str, cert: x509.Certificate, path: Path) -> None:
    _out.print(f"[green]{what}[/] {cert.subject.rfc4514_string()} -> {path}")
    _out.print(f"  serial      {cert.serial_number:x}")
    _out.print(f"  valid until {cert.not_valid_after_utc.isoformat()}")
    _out.print(f"  sha256      {sha256_fingerprint(cert)}")


@ca_app.command("init-root")
def init_root_cmd(
    directory: Annotated[Path, typer.Argument(help="New CA directory (absent or empty).")],
    name: Annotated[str, typer.Option("--name", help="Root CA common name.")] = "Tether Root CA",
    validity_days: Annotated[int, typer.Option("--validity-days", help="Lifetime.")] = 20 * 365,
    passphrase_file: NewRootPassphraseFile = None,
) -> None:
    """Offline ceremony: create the root key (encrypted, 0600) and self-signed certificate."""
    passphrase = read_secret(
        "root key passphrase", env_var=ROOT_ENV, file=passphrase_file, confirm=True
    )
    ca = init_root(directory, passphrase, common_name=name, validity=timedelta(days=validity_days))
    _show("root CA", ca.certificate, directory)


@ca_app.command("issue-intermediate")
def issue_intermediate_cmd(
    out_dir: Annotated[Path, typer.Argument(help="New issuing CA directory.")],
    root_dir: Annotated[Path, typer.Option("--root", help="The root CA directory.")],
    role: Annotated[str, typer.Option("--role", help="device, factory, server or service.")],
    name: Annotated[str, typer.Option("--name", help="Issuing CA common name.")],
    validity_days: Annotated[int, typer.Option("--validity-days", help="Lifetime.")] = 5 * 365,
    root_passphrase_file: RootPassphraseFile = None,
    passphrase_file: NewCaPassphraseFile = None,
    root_crl_url: Annotated[
        str | None,
        typer.Option(
            "--root-crl-url",
            help="Where the root CRL is published (e.g. http://HOST:8080/crl/root.crl, the "
            "cloud's publish port); written into the certificate as its CRL distribution point.",
        ),
    ] = None,
) -> None:
    """Create an issuing CA (pathLen 0, a role) signed by the root."""
    parsed_role = parse_role(role)
    root = CaDirectory.open(root_dir)
    root_passphrase = read_secret(
        "root key passphrase", env_var=ROOT_ENV, file=root_passphrase_file
    )
    passphrase = read_secret(
        "issuing CA key passphrase", env_var=CA_ENV, file=passphrase_file, confirm=True
    )
    ca = init_issuing(
        out_dir,
        root,
        root_passphrase,
        passphrase,
        common_name=name,
        role=parsed_role,
        validity=timedelta(days=validity_days),
        root_crl_url=root_crl_url,
    )
    _show(f"{parsed_role.value} issuing CA", ca.certificate, out_dir)


@ca_app.command("revoke-intermediate")
def revoke_intermediate_cmd(
    cert_file: Annotated[Path, typer.Argument(help="The issuing CA certificate to revoke.")],
    root_dir: Annotated[Path, typer.Option("--root", help="The root CA directory.")],
    reason: Annotated[str | None, typer.Option("--reason", help=_REASON_HELP)] = None,
    root_passphrase_file: RootPassphraseFile = None,
) -> None:
    """Revoke an issuing CA and re-sign the root CRL."""
    parsed_reason = parse_reason(reason)
    cert = load_certificate(read_input_file(cert_file, "certificate"))
    root = CaDirectory.open(root_dir)
    if root.kind != "root":
        raise CaDirectoryError(f"{root_dir} is an issuing CA; pass the root CA directory")
    passphrase = read_secret("root key passphrase", env_var=ROOT_ENV, file=root_passphrase_file)
    crl = root.revoke(cert, passphrase, reason=parsed_reason, require_ca=True)
    _out.print(
        f"[green]revoked[/] {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}); "
        f"root CRL now lists {len(crl)} -> {root_dir / 'crl.pem'}"
    )


@ca_app.command("sign-csr")
def sign_csr_cmd(
    csr_file: Annotated[Path, typer.Argument(help="The device CSR (PEM or DER).")],
    ca_dir: Annotated[Path, typer.Option("--ca", help="Device or factory issuing CA directory.")],
    serial: Annotated[str, typer.Option("--serial", help="The device serial (the subject CN).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the certificate (PEM, new).")],
    validity_days: Annotated[
        int | None, typer.Option("--validity-days", help="Lifetime; default: the issuing CA's.")
    ] = None,
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Issue a device certificate from a CSR; the subject is built from --serial only."""
    csr = load_csr(read_input_file(csr_file, "CSR"))
    ca_directory = CaDirectory.open(ca_dir)
    ensure_absent(out)  # before any secret is read
    ca = ca_directory.issuing(_passphrase(ca_directory, passphrase_file))
    cert = ca.issue_device_certificate(csr, serial, validity=_days(validity_days))
    write_new_file(out, pem(cert))
    _show("device certificate", cert, out)


def _write_key_and_cert(out_key: Path, out_cert: Path, key_pem: bytes, cert_pem: bytes) -> None:
    ensure_absent(out_key)
    ensure_absent(out_cert)
    write_new_file(out_key, key_pem, mode=0o600)
    try:
        write_new_file(out_cert, cert_pem)
    except BaseException:
        out_key.unlink(missing_ok=True)
        raise


@ca_app.command("issue-server")
def issue_server_cmd(
    ca_dir: Annotated[Path, typer.Option("--ca", help="The server issuing CA directory.")],
    out_cert: OutCert,
    out_key: OutKey,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="DNS name (repeatable).")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="IP address (repeatable).")] = None,
    validity_days: Annotated[int, typer.Option("--validity-days", help="Lifetime in days.")] = 397,
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Issue a TLS server certificate and a new key for the cloud endpoint."""
    ensure_absent(out_key)
    ensure_absent(out_cert)
    addresses = []
    for value in ip or []:
        try:
            addresses.append(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidNameError(f"{value!r} is not an IPv4 or IPv6 address") from None
    ca_directory = CaDirectory.open(ca_dir)
    ca = ca_directory.issuing(_passphrase(ca_directory, passphrase_file))
    key = generate_key()
    cert = ca.issue_server_certificate(
        key.public_key(),
        dns_names=dns or [],
        ip_addresses=addresses,
        validity=timedelta(days=validity_days),
    )
    _write_key_and_cert(out_key, out_cert, private_key_pem(key), pem(cert))
    _show("server certificate", cert, out_cert)


@ca_app.command("issue-service")
def issue_service_cmd(
    ca_dir: Annotated[Path, typer.Option("--ca", help="The service issuing CA directory.")],
    name: Annotated[str, typer.Option("--name", help="The service name (the subject CN).")],
    out_cert: OutCert,
    out_key: OutKey,
    validity_days: Annotated[int, typer.Option("--validity-days", help="Lifetime in days.")] = 397,
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Issue a client certificate and a new key for a backend application."""
    ensure_absent(out_key)
    ensure_absent(out_cert)
    ca_directory = CaDirectory.open(ca_dir)
    ca = ca_directory.issuing(_passphrase(ca_directory, passphrase_file))
    key = generate_key()
    cert = ca.issue_service_certificate(
        key.public_key(), name=name, validity=timedelta(days=validity_days)
    )
    _write_key_and_cert(out_key, out_cert, private_key_pem(key), pem(cert))
    _show("service certificate", cert, out_cert)


@ca_app.command("crl")
def crl_cmd(
    ca_dir: Annotated[Path, typer.Option("--ca", help="The CA directory (issuing or root).")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write the CRL here.")] = None,
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Re-sign the CA's CRL from its revocation list (DIR/crl.pem, and --out if given)."""
    ca_directory = CaDirectory.open(ca_dir)
    if out is not None:
        ensure_absent(out)
    crl = ca_directory.refresh_crl(_passphrase(ca_directory, passphrase_file))
    if out is not None:
        write_new_file(out, crl.public_bytes(Encoding.PEM))
    _out.print(
        f"[green]CRL[/] {len(crl)} revoked, next update {crl.next_update_utc} -> "
        f"{out or ca_dir / 'crl.pem'}"
    )
    if crl.next_update_utc is not None:
        # The cloud re-signs only CRLs of keys it holds; this one is the ceremony's to renew.
        _out.print(
            f"  reminder: it expires {crl.next_update_utc:%Y-%m-%d %H:%M}Z; run `tether ca crl` "
            "again and publish it (`tether cloud publish-crl --root` or `--ca FINGERPRINT`) "
            "before then, or relying parties that check CRLs refuse this CA's certificates"
        )


@ca_app.command("revoke")
def revoke_cmd(
    cert_file: Annotated[Path, typer.Argument(help="The certificate to revoke (issued by --ca).")],
    ca_dir: Annotated[Path, typer.Option("--ca", help="The issuing CA directory.")],
    reason: Annotated[str, typer.Option("--reason", help=_REASON_HELP)],
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Revoke a certificate issued by this CA and re-sign its CRL."""
    parsed_reason = parse_reason(reason)
    cert = load_certificate(read_input_file(cert_file, "certificate"))
    ca_directory = CaDirectory.open(ca_dir)
    crl = ca_directory.revoke(
        cert, _passphrase(ca_directory, passphrase_file), reason=parsed_reason
    )
    _out.print(
        f"[green]revoked[/] {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}); "
        f"CRL now lists {len(crl)} -> {ca_dir / 'crl.pem'}"
    )


@ca_app.command("verification-cert")
def verification_cert_cmd(
    ca_dir: Annotated[Path, typer.Option("--ca", help="The CA directory to prove you hold.")],
    code: Annotated[str, typer.Option("--code", help="The cloud's registration code.")],
    out: Annotated[Path, typer.Option("--out", help="Verification certificate (PEM, new).")],
    validity_minutes: Annotated[
        int, typer.Option("--validity-minutes", help="Lifetime (at most 1440).")
    ] = 60,
    passphrase_file: CaPassphraseFile = None,
) -> None:
    """Sign a short-lived CN=<code> leaf with the CA key: proof of possession for the cloud."""
    ca_directory = CaDirectory.open(ca_dir)
    ensure_absent(out)  # before any secret is read
    signer = ca_directory.signer(_passphrase(ca_directory, passphrase_file))
    cert = issue_verification_certificate(
        ca_directory.certificate, signer, code, validity=timedelta(minutes=validity_minutes)
    )
    write_new_file(out, pem(cert))
    _show("verification certificate", cert, out)
