"""A throwaway PostgreSQL server (Debian ``postgresql``) for the tests and the benchmarks.

Started with initdb/pg_ctl from /usr/lib/postgresql/*/bin on a Unix socket in a temporary
directory (no TCP port), stopped and deleted afterwards. Missing PostgreSQL is an error, not a
skip: ``make test`` and ``make bench`` install the package.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresMissingError(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def _run(cmd: list[str], as_user: str | None) -> None:
    if as_user is not None:  # initdb refuses to run as root
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    # No pipes: the server started by pg_ctl would inherit them and keep them open.
    subprocess.run(
        cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
    )


@contextmanager
def throwaway_postgres(*, fsync: bool = False, settings: str = "") -> Iterator[str]:
    """Run a fresh PostgreSQL server; yields its SQLAlchemy URL (database ``postgres``).

    ``fsync=False`` suits tests (nothing to keep); a benchmark keeps PostgreSQL's durable
    default. ``settings`` adds ``-c name=value`` server options.
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise PostgresMissingError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "run scripts/install-system-deps"
        )
    bindir = Path(bins[-1]).parent
    as_user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="tether-pg-"))  # short path: socket names are limited
    if as_user is not None:
        shutil.chown(base, user=as_user)
    data = base / "data"
    _run(
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tether", "--no-sync"],
        as_user,
    )
    options = f"-k {base} -c listen_addresses='' -c fsync={'on' if fsync else 'off'} {settings}"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log")]
    try:
        _run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"], as_user)
        yield f"postgresql+psycopg://tether@/postgres?host={base}"
    finally:
        subprocess.run(
            (["runuser", "-u", as_user, "--"] if as_user else [])
            + [*pg_ctl, "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)
