"""``tether factory``: the station that gives devices their identity on the production line."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tether.cli.secrets import read_secret
from tether.errors import InvalidInputError, UsageError
from tether.factory import FactoryStation, ManufacturingLog, ProvisionedDevice
from tether.factory.handout import Handout, check_trust_file
from tether.pki.store import CaDirectory
from tether.secure_element import (
    EMULATOR_LOGGER,
    EmulatedSecureElement,
    Pkcs11SecureElement,
    SecureElement,
)

app = typer.Typer(help="Provision devices: key in the secure element, certificate from the CA.")
console = Console(highlight=False)


def register(root: typer.Typer) -> None:
    """Add ``tether factory`` to the root app."""
    root.add_typer(app, name="factory", no_args_is_help=True)


class _OncePerMessage(logging.Filter):
    """Let each distinct message through once: the emulator warns on every use, a batch of a
    thousand units needs to hear it once, not a thousand times."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def check_element_choice(
    *, pkcs11_module: str | None, token: str | None, emulator: Path | None
) -> None:
    """Refuse an ambiguous or incomplete choice of secure element, before any secret is read."""
    if (pkcs11_module is None) == (emulator is None):
        raise UsageError(
            "choose one secure element: --pkcs11-module with --token, or --emulator DIR",
            code="factory_choose_secure_element",
        )
    if pkcs11_module is not None and token is None:
        raise UsageError(
            "--pkcs11-module needs --token (the token label)", code="factory_token_missing"
        )
    if emulator is not None and token is not None:
        raise UsageError(
            "--token names a PKCS#11 token; it does not go with --emulator",
            code="factory_choose_secure_element",
        )


def open_secure_element(
    *,
    pkcs11_module: str | None,
    token: str | None,
    pin_file: Path | None,
    emulator: Path | None,
    emulator_passphrase_file: Path | None,
) -> SecureElement:
    """The secure element the options name: a PKCS#11 token or the software emulator."""
    check_element_choice(pkcs11_module=pkcs11_module, token=token, emulator=emulator)
    if emulator is not None:
        logger = logging.getLogger(EMULATOR_LOGGER)
        logger.addFilter(_OncePerMessage())
        passphrase = read_secret(
            "emulator passphrase",
            env_var="TETHER_EMULATOR_PASSPHRASE",
            file=emulator_passphrase_file,
        )
        return EmulatedSecureElement.open(emulator, passphrase)
    pin = read_secret("token PIN", env_var="TETHER_PKCS11_PIN", file=pin_file)
    assert pkcs11_module is not None and token is not None  # check_element_choice
    return Pkcs11SecureElement.open(pkcs11_module, token, pin)


@app.command()
def provision(
    ca: Path = typer.Option(..., help="Directory of the factory issuing CA."),
    log: Path = typer.Option(..., help="Manufacturing log (JSON lines), appended to."),
    serial: str | None = typer.Option(None, help="Make one unit with this serial."),
    count: int | None = typer.Option(None, help="Make a line of this many units."),
    prefix: str = typer.Option("TTH-", help="Serial prefix for --count; numbers continue the log."),
    pkcs11_module: str | None = typer.Option(None, help="PKCS#11 module of the secure element."),
    token: str | None = typer.Option(None, help="Token label (with --pkcs11-module)."),
    pin_file: Path | None = typer.Option(None, help="File with the token PIN (else env)."),
    emulator: Path | None = typer.Option(None, help="Software emulator directory instead."),
    emulator_passphrase_file: Path | None = typer.Option(None, help="Emulator passphrase file."),
    ca_passphrase_file: Path | None = typer.Option(None, help="File with the CA passphrase."),
    validity_days: int | None = typer.Option(None, help="Certificate validity (default: CA's)."),
    out: Path | None = typer.Option(
        None, help="Where each unit's files go (default: 'units' next to the log)."
    ),
    pinned_ca: Path | None = typer.Option(
        None, help="The cloud's DATA/pinned-ca.pem, copied for each unit to flash."
    ),
) -> None:
    """Provision one unit (--serial) or a line of units (--count) with a progress bar.

    Each unit's certificate chain (and, with --pinned-ca, the file it pins to authenticate the
    cloud) is written to OUT/<serial>/. Secrets come from files or the environment:
    TETHER_PKCS11_PIN, TETHER_CA_PASSPHRASE, TETHER_EMULATOR_PASSPHRASE. The private keys
    never leave the secure element.
    """
    if (serial is None) == (count is None):
        raise UsageError(
            "give either --serial (one unit) or --count (a line of units)",
            code="factory_serial_or_count",
        )
    # Usage mistakes are refused before the CA key or the token is opened.
    check_element_choice(pkcs11_module=pkcs11_module, token=token, emulator=emulator)
    trust_file = None
    if pinned_ca is not None:
        try:
            trust_file = check_trust_file(pinned_ca.read_bytes(), pinned_ca)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the trust file {pinned_ca}: {exc.strerror}",
                code="factory_trust_file_invalid",
            ) from exc
    ca_dir = CaDirectory.open(ca)
    passphrase = read_secret(
        "factory CA passphrase", env_var="TETHER_CA_PASSPHRASE", file=ca_passphrase_file
    )
    issuing = ca_dir.issuing(passphrase)
    validity = timedelta(days=validity_days) if validity_days is not None else None
    with open_secure_element(
        pkcs11_module=pkcs11_module,
        token=token,
        pin_file=pin_file,
        emulator=emulator,
        emulator_passphrase_file=emulator_passphrase_file,
    ) as element:
        if element.is_emulator:
            console.print(
                "[bold yellow]software emulator:[/] keys are in encrypted files on this host, "
                "not in a secure element. For a quick start only."
            )
        station = FactoryStation(issuing, element, ManufacturingLog(log), validity=validity)
        handout = Handout(out or log.parent / "units", issuing.certificate, trust_file)
        serials = [serial] if serial is not None else station.next_serials(prefix, count or 0)
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]provisioning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("line", total=len(serials), last="")

            def done(device: ProvisionedDevice) -> None:
                handout.write(device.record.serial, device.certificate)
                progress.update(task, advance=1, last=device.record.serial)

            made = station.provision_line(serials, on_done=done)
        elapsed = time.perf_counter() - started
    rate = len(made) / elapsed if elapsed > 0 else float("inf")
    console.print(
        f"[green]made {len(made)} unit(s)[/] in {elapsed:.1f} s ({rate:.1f} units/s); "
        f"records in {log}; files in {handout.directory}"
    )
    if trust_file is None:
        console.print(
            "[yellow]no --pinned-ca given:[/] flash the cloud's DATA/pinned-ca.pem on each "
            "unit so it trusts only the cloud's server CA"
        )
