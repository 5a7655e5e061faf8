"""``tether policy put|show|list|delete|attach|detach|builtin|schema``: the documents and
where they are attached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether.cli.cloud.app import read_file
from tether.cli.cloud.target import Where, with_where
from tether.cli.policy.common import (
    Ca,
    Data,
    DataDir,
    Device,
    Group,
    Json,
    Service,
    app,
    cloud,
    console,
    emit,
    one,
    positionals,
)
from tether.cloud.policy.builtin import BUILTIN, BUILTIN_DEVICE, BUILTIN_SERVICE
from tether.cloud.policy.document import POLICY_SCHEMA
from tether.cloud.registry.policies import TargetKind

Name = Annotated[str | None, typer.Argument(metavar="NAME", show_default=False)]
File = Annotated[
    str | None, typer.Argument(metavar="FILE", help="The JSON document.", show_default=False)
]


@app.command("put")
@with_where
def put(
    data: Data = None,
    name: Name = None,
    file: File = None,
    data_dir: DataDir = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Create a policy from a JSON file, or add its next version."""
    data, (policy, path) = positionals((data, name, file), ("NAME", "FILE"))
    document = read_file(Path(path))
    with cloud(data, data_dir, where) as found:
        record = found.put_policy(policy, document)
    emit(
        record,
        as_json,
        lambda: console.print(
            f"policy {record.name} v{record.version} (sha256 {record.sha256[:16]})"
        ),
    )


@app.command("show")
@with_where
def show(
    data: Data = None,
    name: Name = None,
    data_dir: DataDir = None,
    version: Annotated[int | None, typer.Option(help="A past version.")] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Print a policy document (current version unless ``--version``).

    ``--json`` prints the whole version (number, sha256, author, document); a built-in
    default has only its document, printed either way.
    """
    data, (policy,) = positionals((data, name), ("NAME",))
    if policy in BUILTIN:
        typer.echo(json.dumps(BUILTIN[policy].to_json(), indent=2))
        return
    with cloud(data, data_dir, where) as found:
        record = found.policy(policy, version=version)
    emit(record, as_json, lambda: typer.echo(json.dumps(record.document, indent=2)))


@app.command("list")
@with_where
def list_policies(
    data: Data = None, data_dir: DataDir = None, as_json: Json = False, *, where: Where
) -> None:
    """Every policy, its current version and where it is attached.

    ``--json``: ``{"policies": [...], "attachments": [...]}``, the API's two answers.
    """
    with cloud(data, data_dir, where) as found:
        policies = found.policies()
        attachments = found.attachments()

    def render() -> None:
        table = Table("policy", "version", "attached to")
        for record in policies:
            where_ = [f"{a.kind}:{a.target}" for a in attachments if a.policy == record.name]
            table.add_row(record.name, str(record.version), ", ".join(where_) or "-")
        console.print(table)

    emit({"policies": policies, "attachments": attachments}, as_json, render)


@app.command("delete")
@with_where
def delete(data: Data = None, name: Name = None, data_dir: DataDir = None, *, where: Where) -> None:
    """Delete a policy that is attached nowhere."""
    data, (policy,) = positionals((data, name), ("NAME",))
    with cloud(data, data_dir, where) as found:
        found.delete_policy(policy)
    console.print(f"policy {policy} deleted")


def _attachment(
    attach: bool,
    given: tuple[str | None, str | None],
    data_dir: Path | None,
    targets: dict[str, str | None],
    as_json: bool,
    where: Where,
) -> None:
    """``attach`` or ``detach``: one target of the four kinds, the same way in."""
    data, (policy,) = positionals(given, ("NAME",))
    name, target = one(targets, "the target")
    kind = TargetKind(name)
    with cloud(data, data_dir, where) as found:
        if not attach:
            found.detach_policy(policy, kind, target)
            console.print(f"policy {policy} detached from {kind} {target}")
            return
        record = found.attach_policy(policy, kind, target)
    emit(record, as_json, lambda: console.print(f"policy {policy} attached to {kind} {target}"))


@app.command("attach")
@with_where
def attach(
    data: Data = None,
    name: Name = None,
    data_dir: DataDir = None,
    device: Device = None,
    group: Group = None,
    ca: Ca = None,
    service: Service = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Attach a policy to a device, group, CA or service (live sessions follow at once)."""
    targets = {"device": device, "group": group, "ca": ca, "service": service}
    _attachment(True, (data, name), data_dir, targets, as_json, where)


@app.command("detach")
@with_where
def detach(
    data: Data = None,
    name: Name = None,
    data_dir: DataDir = None,
    device: Device = None,
    group: Group = None,
    ca: Ca = None,
    service: Service = None,
    *,
    where: Where,
) -> None:
    """Detach a policy (live sessions follow at once)."""
    targets = {"device": device, "group": group, "ca": ca, "service": service}
    _attachment(False, (data, name), data_dir, targets, False, where)


@app.command("builtin")
def builtin(kind: str = typer.Argument("device", help="device or service")) -> None:
    """Print the built-in default policy of a kind (a starting point for your own)."""
    name = BUILTIN_SERVICE if kind == "service" else BUILTIN_DEVICE
    typer.echo(json.dumps(BUILTIN[name].to_json(), indent=2))


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of a policy document."""
    typer.echo(json.dumps(POLICY_SCHEMA, indent=2))
