"""``tether policy``: write, attach and question the policies the gateway enforces.

Every change goes through the admin service (the same one the API and console use), lands in
the audit log with the operator as actor, and reaches a running gateway's live sessions
through its change feed. ``test`` prints the decision and the statement that made it::

    tether policy test --data-dir DATA --device SN1 --publish devices/SN1/telemetry

``--data-dir`` may come from ``TETHER_DATA_DIR``. A refused ``test`` exits 1, so scripts can
assert a policy. ``builtin`` prints the built-in default documents (no data directory needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from tether.cli.cloud.target import actor as _actor
from tether.cloud.policy.builtin import BUILTIN, BUILTIN_DEVICE, BUILTIN_SERVICE
from tether.cloud.policy.document import POLICY_SCHEMA, Action
from tether.cloud.registry.policies import TargetKind
from tether.errors import InvalidInputError

if TYPE_CHECKING:
    from tether.cloud.operations import AdminOperations


@contextmanager
def _operations(data_dir: Path) -> Iterator[AdminOperations]:
    """The admin service over the data directory's registry (the cloud host's own door)."""
    from tether.cli.cloud.local import LocalCloud

    with LocalCloud(data_dir, actor=_actor()) as cloud:
        yield cloud.ops


app = typer.Typer(
    help="Policies: who may connect, publish, subscribe and receive.", no_args_is_help=True
)
console = Console(highlight=False)

DataDir = typer.Option(
    ..., "--data-dir", envvar="TETHER_DATA_DIR", help="The cloud's data directory."
)
Device = typer.Option(None, "--device", help="A device serial.")
Group = typer.Option(None, "--group", help="A device group.")
Ca = typer.Option(None, "--ca", help="A registered CA's fingerprint.")
Service = typer.Option(None, "--service", help="A service name.")


class TargetChoiceError(InvalidInputError):
    """Exactly one target (or one question) must be named."""

    code = "cli_target_choice"


def register(root: typer.Typer) -> None:
    """Add ``tether policy`` to the root app."""
    root.add_typer(app, name="policy")


def _one(options: dict[str, str | None], what: str) -> tuple[str, str]:
    given = [(k, v) for k, v in options.items() if v is not None]
    if len(given) != 1:
        raise TargetChoiceError(
            f"Give exactly one of {', '.join('--' + k for k in options)} ({what})."
        )
    return given[0]


@app.command("put")
def put(name: str, file: Path, data_dir: Path = DataDir) -> None:
    """Create a policy from a JSON file, or add its next version."""
    with _operations(data_dir) as ops:
        record = ops.put_policy(name, file.read_bytes(), actor=_actor())
    console.print(f"policy {record.name} v{record.version} (sha256 {record.sha256[:16]})")


@app.command("show")
def show(
    name: str,
    data_dir: Path = DataDir,
    version: int | None = typer.Option(None, help="A past version."),
) -> None:
    """Print a policy document (current version unless ``--version``)."""
    if name in BUILTIN:
        typer.echo(json.dumps(BUILTIN[name].to_json(), indent=2))
        return
    with _operations(data_dir) as ops:
        record = ops.registry.get_policy(name, version=version)
    typer.echo(json.dumps(json.loads(record.document), indent=2))


@app.command("list")
def list_policies(data_dir: Path = DataDir) -> None:
    """Every policy, its current version and where it is attached."""
    with _operations(data_dir) as ops:
        policies = ops.registry.list_policies()
        attachments = ops.registry.list_attachments()
    table = Table("policy", "version", "attached to")
    for record in policies:
        where = [f"{a.kind}:{a.target}" for a in attachments if a.policy == record.name]
        table.add_row(record.name, str(record.version), ", ".join(where) or "-")
    console.print(table)


@app.command("delete")
def delete(name: str, data_dir: Path = DataDir) -> None:
    """Delete a policy that is attached nowhere."""
    with _operations(data_dir) as ops:
        ops.delete_policy(name, actor=_actor())
    console.print(f"policy {name} deleted")


def _target(
    device: str | None, group: str | None, ca: str | None, service: str | None
) -> tuple[TargetKind, str]:
    kind, target = _one(
        {"device": device, "group": group, "ca": ca, "service": service}, "the target"
    )
    return TargetKind(kind), target


@app.command("attach")
def attach(
    name: str,
    data_dir: Path = DataDir,
    device: str | None = Device,
    group: str | None = Group,
    ca: str | None = Ca,
    service: str | None = Service,
) -> None:
    """Attach a policy to a device, group, CA or service (live sessions follow at once)."""
    kind, target = _target(device, group, ca, service)
    with _operations(data_dir) as ops:
        ops.attach_policy(name, kind, target, actor=_actor())
    console.print(f"policy {name} attached to {kind} {target}")


@app.command("detach")
def detach(
    name: str,
    data_dir: Path = DataDir,
    device: str | None = Device,
    group: str | None = Group,
    ca: str | None = Ca,
    service: str | None = Service,
) -> None:
    """Detach a policy."""
    kind, target = _target(device, group, ca, service)
    with _operations(data_dir) as ops:
        ops.detach_policy(name, kind, target, actor=_actor())
    console.print(f"policy {name} detached from {kind} {target}")


@app.command("group")
def group(
    serial: str,
    data_dir: Path = DataDir,
    add: list[str] = typer.Option([], help="Put the device in this group."),
    remove: list[str] = typer.Option([], help="Take the device out of this group."),
) -> None:
    """Show or change a device's groups."""
    with _operations(data_dir) as ops:
        groups = ops.registry.device_groups(serial)
        for name in add:
            groups = ops.add_device_group(serial, name, actor=_actor())
        for name in remove:
            groups = ops.remove_device_group(serial, name, actor=_actor())
    console.print(f"{serial}: {', '.join(groups) or 'no groups'}")


@app.command("attr")
def attr(
    serial: str,
    name: str | None = typer.Argument(None, help="Attribute name (omit to list)."),
    value: str | None = typer.Argument(None, help="New value."),
    data_dir: Path = DataDir,
    unset: bool = typer.Option(False, help="Remove the attribute."),
) -> None:
    """Show, set or remove (``--unset``) a device attribute."""
    with _operations(data_dir) as ops:
        if name is None:
            attributes = ops.registry.device_attributes(serial)
        elif unset or value is not None:
            attributes = ops.set_device_attribute(
                serial, name, None if unset else value, actor=_actor()
            )
        else:
            raise TargetChoiceError("Give a value, or --unset to remove the attribute.")
    console.print(
        f"{serial}: " + (" ".join(f"{k}={v}" for k, v in attributes.items()) or "no attributes")
    )


@app.command("test")
def test(
    data_dir: Path = DataDir,
    device: str | None = Device,
    service: str | None = Service,
    publish: str | None = typer.Option(None, help="May it publish to this topic?"),
    subscribe: str | None = typer.Option(None, help="May it subscribe to this filter?"),
    receive: str | None = typer.Option(None, help="May it receive on this topic or filter?"),
    connect: bool = typer.Option(False, "--connect", help="May it connect?"),
    enroll: bool = typer.Option(False, "--enroll", help="May it enroll (EST)?"),
) -> None:
    """Print the gateway's decision now and the statement that made it; exit 1 if refused."""
    kind, name = _one({"device": device, "service": service}, "who asks")
    questions = {"publish": publish, "subscribe": subscribe, "receive": receive}
    if connect:
        questions["connect"] = name
    if enroll:
        questions["enroll"] = name
    action, resource = _one(questions, "the question")
    with _operations(data_dir) as ops:
        decision = ops.test_policy(kind, name, Action(action), resource)
    style = "green" if decision.allowed else "red"
    console.print(
        f"[{style}]{'ALLOWED' if decision.allowed else 'REFUSED'}[/] {decision.explain()}"
    )
    if not decision.allowed:
        raise typer.Exit(1)


@app.command("effective")
def effective(
    data_dir: Path = DataDir, device: str | None = Device, service: str | None = Service
) -> None:
    """What applies to a device or service now: groups, attributes, policies, rules."""
    kind, name = _one({"device": device, "service": service}, "whose policy")
    with _operations(data_dir) as ops:
        found = ops.effective_policy(kind, name)
    subject = found.subject
    console.print(
        f"{kind} {name} · groups {', '.join(subject.groups) or '-'} · attributes "
        + (" ".join(f"{k}={v}" for k, v in subject.attributes) or "-")
    )
    table = Table("policy", "statement", "effect", "action", "pattern")
    for policy, version, sid, effect_, action, pattern in found.rules:
        table.add_row(
            f"{policy} v{version}" if version else policy, sid, effect_, action.value, pattern
        )
    console.print(table)


@app.command("builtin")
def builtin(kind: str = typer.Argument("device", help="device or service")) -> None:
    """Print the built-in default policy of a kind (a starting point for your own)."""
    name = BUILTIN_SERVICE if kind == "service" else BUILTIN_DEVICE
    typer.echo(json.dumps(BUILTIN[name].to_json(), indent=2))


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of a policy document."""
    typer.echo(json.dumps(POLICY_SCHEMA, indent=2))
