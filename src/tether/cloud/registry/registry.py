"""The registry facade: one ``Registry`` on one database, composed of its aggregates.

Sync by design (the async gateway calls it in a worker thread). Every mutating method runs
in one transaction that also writes its audit row, so a change without its audit row (or
the reverse) cannot be committed. Methods either succeed completely or raise a TetherError
and change nothing. Nothing here prints or reads the environment.

Layout (the way step-ca splits ``db/``): each aggregate is a module with one mixin class,
``cas`` (CAs, registration codes), ``devices`` (devices, the serial's binding to one CA,
rebinding), ``certificates`` (certificates, revocation, provisioning a device with its first
certificate), ``jit`` (self-registration on first connect), ``admins``, ``crls`` (published
CRLs and applying them), ``policies`` (policy documents and attachments), ``labels`` (device
groups and attributes), ``audit`` (the log, its action enum, the feed) and ``verdict`` (the
pure connection decision and its one query). ``base`` holds the engines, the clock and the
two transactions; ``convert`` turns rows into records.

Why mixins rather than store objects the facade delegates to: callers everywhere use the
public methods on ``Registry`` with their exact signatures, and delegation would write each
signature and docstring twice (store and facade), which is the kind of copy this split is
meant to remove. With mixins each method is written once, in its aggregate's module, and
every aggregate shares the one engine, clock and transaction helpers through ``self`` (a
test that sets ``registry._clock`` moves every aggregate's clock at once).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from tether.cloud.registry import migrate
from tether.cloud.registry.admins import Admins
from tether.cloud.registry.audit import AuditLog
from tether.cloud.registry.base import db_reason
from tether.cloud.registry.cas import CAs
from tether.cloud.registry.certificates import Certificates
from tether.cloud.registry.crls import CRLs
from tether.cloud.registry.devices import Devices
from tether.cloud.registry.engine import create_registry_engine, parse_url, safe_url
from tether.cloud.registry.enrollment import Enrollments
from tether.cloud.registry.errors import DatabaseUnavailableError
from tether.cloud.registry.jit import JustInTime
from tether.cloud.registry.labels import DeviceLabels
from tether.cloud.registry.policies import Policies
from tether.cloud.registry.verdict import Verdicts


class Registry(
    CAs,
    Devices,
    Certificates,
    JustInTime,
    Admins,
    CRLs,
    AuditLog,
    Verdicts,
    Policies,
    DeviceLabels,
    Enrollments,
):
    """The registry on one database. Thread-safe: share one instance per process.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    @classmethod
    def open(cls, url: str, *, busy_timeout_s: float = 5.0) -> Registry:
        """Open the registry at ``url`` and upgrade its schema to head.

        ``url`` is ``sqlite:///path.db`` (the file is created; its directory must exist) or
        ``postgresql+psycopg://user:pass@host/db``. Raises DatabaseURLError for a bad URL and
        DatabaseUnavailableError (a StorageError; the message masks the password) when the
        database cannot be reached or migrated.
        """
        parsed = parse_url(url)
        display = safe_url(parsed)
        engine = create_registry_engine(parsed, busy_timeout_s=busy_timeout_s)
        try:
            migrate.upgrade(engine)
        except DBAPIError as exc:
            engine.dispose()
            raise DatabaseUnavailableError(
                f"Cannot open the registry database {display}: {db_reason(exc)}. "
                "Check that it is reachable and writable."
            ) from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, display_url=display)

    def close(self) -> None:
        """Release all connections; the registry cannot be used afterwards."""
        committer = getattr(self, "_committer", None)
        if committer is not None:
            committer.close()
        self._engine.dispose()

    def __enter__(self) -> Registry:
        """Use the registry as a context manager that closes it."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the registry."""
        self.close()

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self._display_url
