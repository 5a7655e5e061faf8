"""The cloud's data directory and its typed settings, read once at start-up.

Layout of a data directory made by ``tether cloud init`` (mode 0700)::

    cloud.json         settings: database URL, gateway address and limits, admin API address,
                       its limits (``api_limits``) and the path of the online device issuing
                       CA (if any); mode 0600, since the database URL may carry a password
    server.chain.pem   the gateway's certificate followed by its server issuing CA
    server.key.pem     the gateway's private key, mode 0600, unencrypted so the service can
                       start unattended (protect the directory; an HSM-held server key is a
                       production option the settings leave room for)
    pinned-ca.pem      what devices pin to authenticate the cloud: the server issuing CA, then
                       the root. Flash this file. Tether's agent anchors on the server CA
                       alone; standard clients (mosquitto, openssl) build the chain to the
                       root and refuse a server certificate under any other issuing CA
                       because issuing CAs carry the EKU of their role. A server CA rollover
                       adds the new server CA to this file before the gateway switches.
    root-ca.pem        the root certificate (checks the root CRL; older data directories
                       lack it and keep the root as the only certificate in pinned-ca.pem)
    registry.db        the SQLite registry (when no PostgreSQL URL is configured)

The root private key is never here: the cloud only ever receives the root *certificate*.
The admin API (HTTPS, default port 8443) reuses the gateway's certificate and key. For console
provisioning and CSR signing the cloud needs one *online* device issuing CA: ``api.device_ca``
names its CA directory (outside the data directory; its key stays encrypted there and its
passphrase is given at serve time, from TETHER_CA_PASSPHRASE or a file). Without it the API
still runs, and those two calls answer 503 ``online_ca_not_configured``.

``cloud.json`` is written 0600 and **refused** at load when any group or other permission bit
is set (``settings_file_exposed``, with the ``chmod`` to run): it may hold the database
password, and a file others can write could point the cloud at another database. Refusing is
clearer than a warning nobody reads in a service log.

``metrics`` places the plain-HTTP loopback listeners for ``/metrics``, ``/healthz`` and
``/readyz`` (:class:`MetricsOptions`; issue 20).

``publish`` places the plain-HTTP listener for CRLs and OCSP (:class:`PublishOptions`;
issue 19): relying parties fetch revocation data without credentials and often without TLS
(a TLS check of a CRL's server would need revocation data first), and the answers are
signed, so plain HTTP is the convention (RFC 5280 4.2.1.13, RFC 6960). Its ``url`` is what
the cloud writes into the certificates it issues (CRL distribution point, OCSP responder).
``nats_url`` (optional; one URL or several separated by commas) names an existing NATS
server or cluster for messages between gateway workers and hosts (issue 15). Without it,
``tether cloud serve --workers N`` with N > 1 starts and supervises a loopback nats-server of
its own (:mod:`tether.cloud.bus.natsd`).

``api_limits`` bounds the admin API's path (issue 14); see :class:`ApiLimitOptions` for each
number and why. Every limit logs a stable reason code when it acts and is counted in
``GET /api/v1/limits``.
"""

from __future__ import annotations

import json
import stat
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from tether.cloud.enrollment.settings import EnrollmentOptions
from tether.cloud.gateway import GatewaySettings
from tether.errors import ConfigurationError

if TYPE_CHECKING:
    from tether.pki import IssuingCA

SETTINGS_FILE = "cloud.json"
SERVER_CHAIN = "server.chain.pem"
SERVER_KEY = "server.key.pem"
PINNED_CA = "pinned-ca.pem"
ROOT_CA = "root-ca.pem"
SQLITE_FILE = "registry.db"


def _gateway_default(name: str) -> Any:
    return GatewaySettings.__dataclass_fields__[name].default


@dataclass(frozen=True)
class GatewayOptions:
    """The gateway settings kept in ``cloud.json`` (file paths are implied by the layout).

    Each limit is described on ``tether.cloud.gateway.GatewaySettings``; the defaults are
    taken from there (one default in one place), and a ``cloud.json`` written before a limit
    existed gets its default.
    """

    host: str = _gateway_default("host")
    port: int = _gateway_default("port")
    connect_timeout: float = _gateway_default("connect_timeout")
    max_packet_size: int = _gateway_default("max_packet_size")
    max_keep_alive: int = _gateway_default("max_keep_alive")
    write_buffer_limit: int = _gateway_default("write_buffer_limit")
    handshake_timeout: float = _gateway_default("handshake_timeout")
    max_connections: int = _gateway_default("max_connections")
    max_pending_connections: int = _gateway_default("max_pending_connections")
    max_pending_per_address: int = _gateway_default("max_pending_per_address")
    max_filters_per_subscribe: int = _gateway_default("max_filters_per_subscribe")
    max_subscriptions_per_session: int = _gateway_default("max_subscriptions_per_session")
    quota_backoff: float = _gateway_default("quota_backoff")
    receive_maximum: int = _gateway_default("receive_maximum")
    max_queued_messages: int = _gateway_default("max_queued_messages")
    max_queued_bytes: int = _gateway_default("max_queued_bytes")
    verdict_threads: int = _gateway_default("verdict_threads")


@dataclass(frozen=True)
class ApiOptions:
    """The admin API settings kept in ``cloud.json`` (its TLS files are the gateway's)."""

    host: str = "127.0.0.1"
    port: int = 8443
    device_ca: str | None = None  # absolute path of the online device issuing CA directory
    registration_code_ttl: int = 3600  # seconds a CA registration code stays valid


@dataclass(frozen=True)
class ApiLimitOptions:
    """Bounds on the admin API's path, kept in ``cloud.json`` under ``api_limits``.

    The defaults are sized for the 2-core reference machine, where the API shares the event
    loop with the gateway: the scrypt check (16 MiB, ~40 ms) gets one thread of its own, so at
    most one core is ever spent on token checks and the gateway's verdict pool never waits
    behind them; four checks may be admitted at once (one running, three waiting, ~0.2 s of
    queue), the fifth is refused with 503 at once rather than queued. One address may run
    5 checks in a burst and then one every 2 s (a legitimate client needs one per process:
    verified tokens are cached), and 10 failed credentials per minute before its further
    attempts get 429 until the minute ends. Failed credentials are audited as at most two rows
    per address per window (the first failure, and the moment it is throttled, with the
    count), and at most ``failure_audit_rows_per_window`` (10) rows per window overall, plus
    one summary row of what went unrecorded: every gateway's revocation feed reads each audit
    row (today with a thread hop per row), so a flood of rows would delay revocations (the
    abuse test measured ~0.9 s with 100 rows in a burst). Per-address detail beyond that is in
    the log (one line per address and window) and the counters of ``GET /api/v1/limits``.
    """

    max_body_bytes: int = 128 * 1024  # any request body; 413 beyond, before it is read
    max_crl_body_bytes: int = 4 * 1024 * 1024  # CRL uploads (authenticated first)
    max_connections: int = 256  # uvicorn limit_concurrency: 503 beyond
    max_header_bytes: int = 16 * 1024  # h11_max_incomplete_event_size: request line + headers
    keep_alive_timeout: int = 5  # seconds an idle keep-alive connection stays open
    api_threads: int = 4  # registry and PKI work of API requests (not the default pool)
    token_check_threads: int = 1  # the scrypt lane
    token_check_max_pending: int = 4  # scrypt checks running or waiting; 503 beyond
    kdf_burst_per_address: int = 5  # scrypt checks one address may start at once
    kdf_per_second_per_address: float = 0.5  # then this many per second (429 beyond)
    auth_failures_per_address: int = 10  # failed credentials per window; 429 beyond
    auth_failure_window: float = 60.0  # seconds
    tracked_addresses: int = 10_000  # addresses remembered for the limits (LRU)
    failure_audit_rows_per_window: int = 10  # audit rows for failures, all addresses

    def __post_init__(self) -> None:
        """Refuse a limit that is not a positive number (a zero would lock the API)."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"api_limits.{spec.name} must be a positive number")


@dataclass(frozen=True)
class MetricsOptions:
    """The observability listeners, kept in ``cloud.json`` under ``metrics``.

    Plain HTTP on loopback by default (see :mod:`tether.cloud.observability.http` for why):
    ``port`` serves the gateway process's ``/metrics``, ``/healthz`` and ``/readyz``; ``api_port``
    the admin API process's ``/metrics`` and ``/healthz``. 9883 echoes MQTT's 8883 (choose
    another if it is taken); 0 picks any free port; ``enabled: false`` serves none of it.
    ``feed_max_lag`` is how far behind the registry the change feed may be (seconds) and the
    process still be ready.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9883
    api_port: int = 9884
    feed_max_lag: float = 5.0


@dataclass(frozen=True)
class PublishOptions:
    """The plain-HTTP CRL and OCSP listener (``publish`` in ``cloud.json``).

    ``url`` is the base URL relying parties reach it by, written into issued certificates
    (``<url>/crl/<CA fingerprint>.crl``, OCSP at ``<url>/ocsp``); default
    ``http://<host>:<port>``. Set it to the public name when the listener sits behind a
    proxy. CRLs the cloud signs itself are valid ``crl_days`` and re-signed when a revocation
    changes them or less than ``resign_hours`` of validity is left, whichever comes first.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    url: str | None = None
    crl_days: int = 7
    resign_hours: int = 24

    @property
    def base_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")

    def crl_url(self, fingerprint: str) -> str:
        """Where the CRL of the CA ``fingerprint`` (or ``root``) is served."""
        return f"{self.base_url}/crl/{fingerprint}.crl"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"


@dataclass(frozen=True)
class CloudSettings:
    """Everything ``tether cloud serve`` needs, resolved against the data directory."""

    data_dir: Path
    database_url: str
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    api: ApiOptions = field(default_factory=ApiOptions)
    api_limits: ApiLimitOptions = field(default_factory=ApiLimitOptions)
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    enrollment: EnrollmentOptions = field(default_factory=EnrollmentOptions)
    publish: PublishOptions = field(default_factory=PublishOptions)
    nats_url: str | None = None

    @property
    def nats_servers(self) -> tuple[str, ...]:
        """The configured NATS servers (empty: none configured)."""
        if not self.nats_url:
            return ()
        return tuple(url.strip() for url in self.nats_url.split(",") if url.strip())

    @property
    def server_chain(self) -> Path:
        return self.data_dir / SERVER_CHAIN

    @property
    def server_key(self) -> Path:
        return self.data_dir / SERVER_KEY

    @property
    def pinned_ca(self) -> Path:
        return self.data_dir / PINNED_CA

    def online_ca(self, passphrase: str) -> IssuingCA | None:
        """The online device issuing CA (``api.device_ca``) opened with its passphrase, or None.

        One place for what it signs to carry: where its revocation data is published (when
        ``publish`` is on). ``tether cloud serve`` and the CLI on the cloud host both use it.
        """
        if self.api.device_ca is None:
            return None
        from tether.pki import sha256_fingerprint
        from tether.pki.store import CaDirectory

        online = CaDirectory.open(Path(self.api.device_ca)).issuing(passphrase)
        if self.publish.enabled:
            online.crl_distribution_point = self.publish.crl_url(
                sha256_fingerprint(online.certificate)
            )
            online.ocsp_url = self.publish.ocsp_url
        return online

    def root_certificate(self) -> x509.Certificate:
        """The root certificate: ``root-ca.pem``, else the self-signed one in the pinned file."""
        path = self.data_dir / ROOT_CA
        try:
            source = path if path.exists() else self.pinned_ca
            certificates = x509.load_pem_x509_certificates(source.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read the root certificate in {self.data_dir}: {exc}"
            ) from None
        roots = [c for c in certificates if c.issuer == c.subject]
        if not roots:
            raise ConfigurationError(f"{source} holds no self-signed root certificate")
        return roots[-1]

    def gateway_settings(self, **overrides: Any) -> GatewaySettings:
        """The gateway's own settings object, with the data directory's certificate files."""
        options = replace(self.gateway, **overrides)
        return GatewaySettings(
            certificate_chain=self.server_chain,
            private_key=self.server_key,
            **asdict(options),
        )

    @staticmethod
    def default_database_url(data_dir: Path) -> str:
        return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"

    def to_json(self) -> bytes:
        """The content of ``cloud.json``."""
        data = {
            "version": 1,
            "database_url": self.database_url,
            "gateway": asdict(self.gateway),
            "api": asdict(self.api),
            "api_limits": asdict(self.api_limits),
            "metrics": asdict(self.metrics),
            "enrollment": asdict(self.enrollment),
            "publish": asdict(self.publish),
        }
        if self.nats_url:
            data["nats_url"] = self.nats_url
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def load(cls, data_dir: Path) -> CloudSettings:
        """Read ``cloud.json``; a missing, damaged or exposed file is a ``ConfigurationError``.

        Exposed: any group or other permission bit set (see the module docstring).
        """
        path = data_dir / SETTINGS_FILE
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise ConfigurationError(
                    f"{path} is readable or writable by others (mode {mode:04o}); it may hold "
                    f"the database password. Run `chmod 600 {path}` and start again.",
                    code="settings_file_exposed",
                )
            raw = json.loads(path.read_text())
            gateway = GatewayOptions(**raw.get("gateway", {}))
            api = ApiOptions(**raw.get("api", {}))
            api_limits = ApiLimitOptions(**raw.get("api_limits", {}))
            metrics = MetricsOptions(**raw.get("metrics", {}))
            enrollment = EnrollmentOptions(**raw.get("enrollment", {}))
            publish = PublishOptions(**raw.get("publish", {}))
            url = str(raw["database_url"])
            nats_url = raw.get("nats_url")
            if nats_url is not None and not isinstance(nats_url, str):
                raise TypeError("nats_url must be a string (URLs separated by commas)")
        except FileNotFoundError:
            raise ConfigurationError(
                f"{data_dir} is not a Tether cloud data directory (no {SETTINGS_FILE}); "
                "create one with `tether cloud init`"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path} is damaged: {exc}") from None
        return cls(
            data_dir=data_dir,
            database_url=url,
            gateway=gateway,
            api=api,
            api_limits=api_limits,
            metrics=metrics,
            enrollment=enrollment,
            publish=publish,
            nats_url=nats_url,
        )
