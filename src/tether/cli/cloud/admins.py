"""``tether cloud admin add|list|rotate|revoke``: admin credentials, here or through the API.

``add NAME`` makes another admin, ``rotate NAME`` replaces a token (the new one printed once,
the old one refused at once), ``revoke NAME`` ends one for good (never the last active
admin). A token is printed once, plainly (for a script or a 0600 file); only its salted
scrypt hash is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tether.cli.cloud.app import DataDir, Json, admin_app, console, emit, when
from tether.cli.cloud.target import Where, open_cloud, shift, with_where

NameArg = Annotated[str | None, typer.Argument(metavar="NAME", show_default=False)]


def _print_token(name: str, token: str) -> None:
    console.print(f"  admin {name!r} token (shown once, only its hash is kept):")
    # Plain print, no markup: the token must come out exactly, for copy and paste or a script.
    typer.echo(token)


@admin_app.command("add")
@with_where
def admin_add(
    data_dir: DataDir = None, name: NameArg = None, as_json: Json = False, *, where: Where
) -> None:
    """Create another admin credential (a-z, 0-9, . _ -); its token is printed once."""
    data, who = shift(data_dir, name, "NAME")
    with open_cloud(data, where) as cloud:
        issued = cloud.add_admin(who)
    emit(issued, as_json, lambda: _print_token(issued.name, issued.token))


@admin_app.command("list")
@with_where
def admin_list(data_dir: DataDir = None, as_json: Json = False, *, where: Where) -> None:
    """List the admins (names only: tokens are never stored)."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        found = cloud.admins()

    def render() -> None:
        for record in found:
            line = f"{record.name}  {record.status}  created {when(record.created_at)}"
            if record.revoked_at is not None:
                line += f"  revoked {when(record.revoked_at)}"
            console.print(line)

    emit(found, as_json, render)


@admin_app.command("rotate")
@with_where
def admin_rotate(
    data_dir: DataDir = None, name: NameArg = None, as_json: Json = False, *, where: Where
) -> None:
    """Give an admin a new token (printed once); the old token is refused at once."""
    data, who = shift(data_dir, name, "NAME")
    with open_cloud(data, where) as cloud:
        issued = cloud.rotate_admin(who)
    emit(issued, as_json, lambda: _print_token(issued.name, issued.token))


@admin_app.command("revoke")
@with_where
def admin_revoke(
    data_dir: DataDir = None, name: NameArg = None, as_json: Json = False, *, where: Where
) -> None:
    """Revoke an admin: its token is refused from the next request, in every process.

    The last active admin cannot be revoked; rotate its token instead.
    """
    data, who = shift(data_dir, name, "NAME")
    with open_cloud(data, where) as cloud:
        record = cloud.revoke_admin(who)
    emit(record, as_json, lambda: console.print(f"[red]revoked[/] admin {record.name}"))
