"""``tether cloud``: set up, run and operate the cloud (registry + gateway + admin API).

One module per kind of work: ``host`` (init, serve, rotate-server-cert: on the cloud host
only), ``fleet`` (devices, certificates, the audit log), ``cas`` (CAs and CRLs), ``admins``
(admin credentials), ``enrollment`` (claims, one-time tokens, renew now). Every command of
the last four runs against this host's data directory or, with ``--url``, against the admin
API (``target``: which cloud; ``local`` / ``remote``: the two doors, with the same answers);
each prints a table, or ``--json``.
"""

from __future__ import annotations

import typer

from tether.cli.cloud import admins, cas, enrollment, fleet, host
from tether.cli.cloud.app import app


def register(root: typer.Typer) -> None:
    """Add ``tether cloud`` to the root app."""
    root.add_typer(app, name="cloud")


__all__ = ["admins", "app", "cas", "enrollment", "fleet", "host", "register"]
