"""``tether policy group|attr|test|effective``: a device's labels, and what applies to a
device or service now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether.cli.cloud.target import Where, with_where
from tether.cli.policy.common import (
    Data,
    DataDir,
    Device,
    Json,
    Service,
    TargetChoiceError,
    app,
    cloud,
    console,
    emit,
    one,
    positionals,
)
from tether.cloud.policy.document import Action

Serial = Annotated[str | None, typer.Argument(metavar="SERIAL", show_default=False)]


@app.command("group")
@with_where
def group(
    data: Data = None,
    serial: Serial = None,
    data_dir: DataDir = None,
    add: Annotated[list[str] | None, typer.Option(help="Put the device in this group.")] = None,
    remove: Annotated[
        list[str] | None, typer.Option(help="Take the device out of this group.")
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Show or change a device's groups (``--json``: the list)."""
    data, (device,) = positionals((data, serial), ("SERIAL",))
    with cloud(data, data_dir, where) as found:
        groups = found.device_groups(device) if not (add or remove) else []
        for name in add or []:
            groups = found.add_device_group(device, name)
        for name in remove or []:
            groups = found.remove_device_group(device, name)
    emit(groups, as_json, lambda: console.print(f"{device}: {', '.join(groups) or 'no groups'}"))


@app.command("attr")
@with_where
def attr(
    data: Data = None,
    serial: Serial = None,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Attribute name (omit to list).")
    ] = None,
    value: Annotated[str | None, typer.Argument(metavar="VALUE", help="New value.")] = None,
    data_dir: DataDir = None,
    unset: Annotated[bool, typer.Option(help="Remove the attribute.")] = False,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Show, set or remove (``--unset``) a device attribute (``--json``: the map).

    ``[DATA] SERIAL`` lists, ``[DATA] SERIAL NAME VALUE`` sets, ``[DATA] SERIAL NAME --unset``
    removes: a NAME alone is never a command, so two values with no ``--unset`` are DATA and
    SERIAL.
    """
    given = [v for v in (data, serial, name, value) if v is not None]
    if unset:
        where_, (device, key) = positionals(given, ("SERIAL", "NAME"))
        new: str | None = None
    elif len(given) >= 3:
        where_, (device, key, new) = positionals(given, ("SERIAL", "NAME", "VALUE"))
    else:
        if len(given) == 2 and not Path(given[0]).is_dir():
            raise TargetChoiceError("Give a value, or --unset to remove the attribute.")
        where_, (device,) = positionals(given, ("SERIAL",))
        key = None
    with cloud(where_, data_dir, where) as found:
        if key is None:
            attributes = found.device_attributes(device)
        else:
            attributes = found.set_device_attribute(device, key, new)
    shown = " ".join(f"{k}={v}" for k, v in attributes.items()) or "no attributes"
    emit(attributes, as_json, lambda: console.print(f"{device}: {shown}"))


@app.command("test")
@with_where
def test(
    data: Data = None,
    data_dir: DataDir = None,
    device: Device = None,
    service: Service = None,
    publish: Annotated[str | None, typer.Option(help="May it publish to this topic?")] = None,
    subscribe: Annotated[str | None, typer.Option(help="May it subscribe to this filter?")] = None,
    receive: Annotated[
        str | None, typer.Option(help="May it receive on this topic or filter?")
    ] = None,
    connect: Annotated[bool, typer.Option("--connect", help="May it connect?")] = False,
    enroll: Annotated[bool, typer.Option("--enroll", help="May it enroll (EST)?")] = False,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Print the gateway's decision now and the statement that made it; exit 1 if refused."""
    kind, name = one({"device": device, "service": service}, "who asks")
    questions = {"publish": publish, "subscribe": subscribe, "receive": receive}
    if connect:
        questions["connect"] = name
    if enroll:
        questions["enroll"] = name
    action, resource = one(questions, "the question")
    with cloud(data, data_dir, where) as found:
        decision = found.test_policy(kind, name, Action(action), resource)

    def render() -> None:
        style = "green" if decision.allowed else "red"
        verdict = "ALLOWED" if decision.allowed else "REFUSED"
        console.print(f"[{style}]{verdict}[/] {decision.explanation}")

    emit(decision, as_json, render)
    if not decision.allowed:
        raise typer.Exit(1)


@app.command("effective")
@with_where
def effective(
    data: Data = None,
    data_dir: DataDir = None,
    device: Device = None,
    service: Service = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """What applies to a device or service now: groups, attributes, policies, rules."""
    kind, name = one({"device": device, "service": service}, "whose policy")
    with cloud(data, data_dir, where) as found:
        answer = found.effective_policy(kind, name)

    def render() -> None:
        console.print(
            f"{kind} {name} · groups {', '.join(answer.groups) or '-'} · attributes "
            + (" ".join(f"{k}={v}" for k, v in answer.attributes.items()) or "-")
        )
        table = Table("policy", "statement", "effect", "action", "pattern")
        for rule in answer.rules:
            policy = f"{rule.policy} v{rule.version}" if rule.version else rule.policy
            table.add_row(policy, rule.statement, rule.effect, rule.action.value, rule.pattern)
        console.print(table)

    emit(answer, as_json, render)
