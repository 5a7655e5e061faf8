"""``tether policy``: write, attach and question the policies the gateway enforces.

Every change goes through the admin service (the same one the API and console use), lands in
the audit log with the operator as actor, and reaches a running gateway's live sessions
through its change feed. ``test`` prints the decision and the statement that made it::

    tether policy test DATA --device SN1 --publish devices/SN1/telemetry
    tether policy test --url https://cloud:8443 --ca-file pinned-ca.pem --device SN1 ...

Which cloud: exactly as ``tether cloud`` chooses (:mod:`tether.cli.cloud.target`), plus the
``--data-dir`` option and ``TETHER_DATA_DIR`` that scripts used before (see
:mod:`tether.cli.policy.common`). A refused ``test`` exits 1, so scripts can assert a policy;
a refusal of the command itself (an unknown policy, a bad document) exits 3 with its code,
the API's own through ``--url``. ``builtin`` and ``schema`` need no cloud.

The commands are split by what they act on: documents and attachments
(:mod:`~tether.cli.policy.documents`), a device's labels and the questions
(:mod:`~tether.cli.policy.subjects`).
"""

from __future__ import annotations

import typer

from tether.cli.policy import documents, subjects
from tether.cli.policy.common import app

__all__ = ["app", "documents", "register", "subjects"]


def register(root: typer.Typer) -> None:
    """Add ``tether policy`` to the root app."""
    root.add_typer(app, name="policy")
