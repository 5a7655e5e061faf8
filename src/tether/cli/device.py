"""The `tether device` commands: connect a device to the cloud over mutual TLS and MQTT 5.

The CLI reads the PIN (environment or file, never an argument) and the options once, builds
typed values and hands them to ``tether.device``; it renders ``--explain`` with Rich.

There is no ``--server-name``: awscrt's MQTT 5 client checks the server certificate against
the host it dials and cannot be told another name, so the option could only ever fail. Dial
the name (or address) the gateway's certificate carries; ``tether cloud rotate-server-cert
--dns NAME --ip ADDRESS`` puts more into it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tether.cli.secrets import read_secret
from tether.device.config import CloudEndpoint, DeviceIdentity, FileKey, KeySource, Pkcs11Key
from tether.device.connection import DeviceClient
from tether.device.enrollment import Renewal, due_for_renewal, enroll, renew
from tether.device.explain import ExplainStep, explain_steps
from tether.device.preflight import probe_server
from tether.errors import NotFoundError, UsageError

PIN_ENV = "TETHER_PKCS11_PIN"


def _key_source(
    key: Path | None,
    module: str | None,
    token: str | None,
    key_label: str | None,
    pin_file: Path | None,
) -> KeySource:
    pkcs11_given = [v is not None for v in (module, token, key_label)]
    if key is not None and any(pkcs11_given):
        raise UsageError("give either --key or the PKCS#11 options, not both")
    if key is not None:
        return FileKey(key)
    if not all(pkcs11_given):
        raise UsageError(
            "no device key: give --key FILE, or --pkcs11-module, --token and --key-label"
        )
    assert module is not None and token is not None and key_label is not None
    pin = read_secret("PKCS#11 user PIN", env_var=PIN_ENV, file=pin_file)
    return Pkcs11Key(module=module, token_label=token, key_label=key_label, pin=pin)


def render_steps(console: Console, steps: list[ExplainStep]) -> None:
    """Print each step as a two-column table."""
    for step in steps:
        table = Table(
            title=f"({step.number}) {step.title}", title_justify="left", show_header=False
        )
        table.add_column("fact", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for label, value in step.facts.items():
            # Text, not markup: values are data (a fingerprint's ":CD:" is not an emoji code).
            table.add_row(Text(label), Text(value))
        console.print(table)


def connect(
    ca: Annotated[Path, typer.Option("--ca", help="The pinned cloud CA (PEM); the only trust.")],
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Cloud host name or address; the server certificate must carry it.",
        ),
    ],
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="Device certificate (PEM); its CN is the serial. With a PKCS#11 key it may be "
            "left out: the certificate stored in the token under --key-label is used.",
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Private key file (software emulator).")
    ] = None,
    pkcs11_module: Annotated[
        str | None, typer.Option("--pkcs11-module", help="PKCS#11 module path.")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="PKCS#11 token label.")] = None,
    key_label: Annotated[
        str | None, typer.Option("--key-label", help="Private key label in the token.")
    ] = None,
    pin_file: Annotated[
        Path | None,
        typer.Option("--pin-file", help=f"File holding the PKCS#11 PIN (else ${PIN_ENV})."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Cloud MQTT port.")] = 8883,
    publish: Annotated[
        str | None, typer.Option("--publish", help="Topic to publish to (QoS 1).")
    ] = None,
    message: Annotated[str, typer.Option("--message", help="Payload for --publish.")] = "",
    subscribe: Annotated[
        str | None, typer.Option("--subscribe", help="Topic filter to subscribe to.")
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=1, help="Messages to wait for with --subscribe.")
    ] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per step.")] = 10.0,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the five handshake steps.")
    ] = False,
    renew_at: Annotated[
        float | None,
        typer.Option(
            "--renew-at",
            help="Renew first once this fraction of the certificate's lifetime has passed "
            "(e.g. 0.67).",
        ),
    ] = None,
) -> None:
    """Connect as the device in --cert, trusting only --ca; optionally publish or subscribe."""
    source = _key_source(key, pkcs11_module, token, key_label, pin_file)
    with tempfile.TemporaryDirectory(prefix="tether-device-") as scratch:
        if cert is None:
            cert = _certificate_from_token(source, Path(scratch))
        _connect(
            cert,
            source,
            ca,
            host,
            port,
            publish,
            message,
            subscribe,
            count,
            timeout,
            explain,
            renew_at,
        )


def _certificate_from_token(source: KeySource, scratch: Path) -> Path:
    """The certificate the factory wrote into the token next to the key, as a PEM file."""
    if not isinstance(source, Pkcs11Key):
        raise UsageError("--cert is needed with --key (only a token holds a certificate too)")
    from cryptography.hazmat.primitives.serialization import Encoding

    from tether.secure_element.pkcs11 import Pkcs11SecureElement

    with Pkcs11SecureElement.open(source.module, source.token_label, source.pin) as element:
        certificate = element.certificate(source.key_label)
    if certificate is None:
        raise DeviceCertificateMissingError(
            f"the token {source.token_label!r} holds no certificate labelled "
            f"{source.key_label!r}; give --cert FILE (e.g. the factory's OUT/<serial>/"
            "certificate.pem)"
        )
    path = scratch / "certificate.pem"
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    return path


class DeviceCertificateMissingError(NotFoundError):
    """No --cert and no certificate in the token under the key's label."""

    code = "device_certificate_missing"


def _connect(
    cert: Path,
    source: KeySource,
    ca: Path,
    host: str,
    port: int,
    publish: str | None,
    message: str,
    subscribe: str | None,
    count: int,
    timeout: float,
    explain: bool,
    renew_at: float | None,
) -> None:
    identity = DeviceIdentity.load(cert, source)
    endpoint = CloudEndpoint(host=host, port=port, pinned_ca=ca)
    console = Console(highlight=False, emoji=False, markup=False)
    if renew_at is not None and due_for_renewal(identity.load_certificate(), fraction=renew_at):
        _print_renewal(console, renew(identity, endpoint, timeout=timeout), cert)
    server = None
    if explain:
        server = probe_server(identity, endpoint, timeout)
        server.require_trusted(endpoint)
    with DeviceClient(identity, endpoint) as client:
        verdict = client.connect(timeout)
        if explain and server is not None and client.key_facts is not None:
            render_steps(
                console, explain_steps(identity, endpoint, server, client.key_facts, verdict)
            )
        console.print(
            f"connected as {verdict.client_id}: CONNACK {verdict.reason_name} "
            f"({verdict.reason_code})"
        )
        if subscribe is not None:
            granted = client.subscribe(subscribe, qos=1, timeout=timeout)
            console.print(f"subscribed to {subscribe}: SUBACK {', '.join(granted.reason_names)}")
        if publish is not None:
            ack = client.publish(publish, message, qos=1, timeout=timeout)
            console.print(f"published to {publish}: PUBACK {ack.reason_name} ({ack.reason_code})")
        if subscribe is not None:
            for _ in range(count):
                received = client.receive(timeout)
                text = received.payload.decode("utf-8", errors="replace")
                console.print(f"received on {received.topic}: {text}")


def _print_renewal(console: Console, renewal: Renewal, out: Path) -> None:
    retry = " (the cloud's answer to an earlier identical request)" if renewal.replayed else ""
    console.print(
        f"{renewal.result} {renewal.serial}: certificate valid until "
        f"{renewal.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z written to {out}{retry}"
    )
    if renewal.key_label is not None:
        console.print(f"the key is now {renewal.key_label!r} in the token: use --key-label for it")


def enroll_command(
    cert: Annotated[Path, typer.Option("--cert", help="The birth certificate (factory or claim).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the operational certificate.")],
    ca: Annotated[Path, typer.Option("--ca", help="The pinned cloud CA (PEM).")],
    host: Annotated[str, typer.Option("--host", help="Cloud host name or address.")],
    key: Annotated[Path | None, typer.Option("--key", help="Private key file.")] = None,
    pkcs11_module: Annotated[str | None, typer.Option("--pkcs11-module")] = None,
    token: Annotated[str | None, typer.Option("--token", help="PKCS#11 token label.")] = None,
    key_label: Annotated[str | None, typer.Option("--key-label")] = None,
    pin_file: Annotated[Path | None, typer.Option("--pin-file")] = None,
    serial: Annotated[
        str | None, typer.Option("--serial", help="The device's serial (with a claim certificate).")
    ] = None,
    port: Annotated[int, typer.Option("--port")] = 8883,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1)] = 10.0,
) -> None:
    """Exchange a birth certificate for an operational one (a CSR made in the SE)."""
    source = _key_source(key, pkcs11_module, token, key_label, pin_file)
    identity = DeviceIdentity.load(cert, source)
    endpoint = CloudEndpoint(host=host, port=port, pinned_ca=ca)
    renewal = enroll(identity, endpoint, out=out, serial=serial, timeout=timeout)
    _print_renewal(Console(highlight=False, markup=False), renewal, out)


def renew_command(
    cert: Annotated[Path, typer.Option("--cert", help="The current operational certificate.")],
    ca: Annotated[Path, typer.Option("--ca", help="The pinned cloud CA (PEM).")],
    host: Annotated[str, typer.Option("--host", help="Cloud host name or address.")],
    key: Annotated[Path | None, typer.Option("--key", help="Private key file.")] = None,
    pkcs11_module: Annotated[str | None, typer.Option("--pkcs11-module")] = None,
    token: Annotated[str | None, typer.Option("--token", help="PKCS#11 token label.")] = None,
    key_label: Annotated[str | None, typer.Option("--key-label")] = None,
    pin_file: Annotated[Path | None, typer.Option("--pin-file")] = None,
    rotate_to: Annotated[
        str | None,
        typer.Option("--rotate-to", help="Generate a new SE key with this label and rotate to it."),
    ] = None,
    port: Annotated[int, typer.Option("--port")] = 8883,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1)] = 10.0,
) -> None:
    """Renew the operational certificate (same SE key), or rotate to a new SE key."""
    source = _key_source(key, pkcs11_module, token, key_label, pin_file)
    identity = DeviceIdentity.load(cert, source)
    endpoint = CloudEndpoint(host=host, port=port, pinned_ca=ca)
    renewal = renew(identity, endpoint, new_label=rotate_to, timeout=timeout)
    _print_renewal(Console(highlight=False, markup=False), renewal, cert)


def register(root: typer.Typer) -> None:
    """Add the `device` group to the root app."""
    group = typer.Typer(help="The device agent: mutual TLS and MQTT 5 to the cloud.")
    group.command("connect")(connect)
    group.command("enroll")(enroll_command)
    group.command("renew")(renew_command)
    root.add_typer(group, name="device")
