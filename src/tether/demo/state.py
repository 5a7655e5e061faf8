"""What the demo's steps share: the options, and what earlier steps produced, filled in order.

A step reads what it needs through the properties of ``DemoState``; one that needs something
no earlier step produced gets a ``DemoStepOrderError`` naming the step that makes it (instead
of an ``assert``, which ``python -O`` removes). What only ``close`` needs (the secure element,
the service client, the impostor server) is a plain optional field.

Secrets: the CA passphrases, the emulator passphrase, the token PIN and the admin API token
are random, held in memory only and never returned in full (a result shows at most a
four-character hint).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar, overload

import httpx

from tether.cloud.loop_thread import CloudThread
from tether.cloud.registry import Registry
from tether.cloud.settings import CloudSettings
from tether.demo.cloud import LogCapture
from tether.demo.errors import DemoApiError, DemoStepOrderError
from tether.demo.peers import ImpostorServer, ServiceClient
from tether.demo.workspace import SoftHsmToken, TpmToken
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity
from tether.pki import IssuingCA, Role
from tether.pki.store import CaDirectory
from tether.secure_element import SecureElement

_T = TypeVar("_T")


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo works and which secure element it uses (``softhsm`` None: emulator).

    ``softhsm`` is any PKCS#11 token the demo made: SoftHSM2 or one on a simulated TPM.
    """

    workspace: Path
    softhsm: SoftHsmToken | TpmToken | None
    timeout: float = 10.0


def _made(value: _T | None, what: str, step: str) -> _T:
    """``value``, or a ``DemoStepOrderError`` saying which step makes it."""
    if value is None:
        raise DemoStepOrderError(
            f"This step needs {what}, which the step {step!r} makes; run that step first."
        )
    return value


class _Made(Generic[_T]):
    """A field of ``DemoState`` that a step fills: read before then, a ``DemoStepOrderError``.

    The value lives in the dataclass field of the same name with a leading underscore (None
    until set), which ``close`` reads directly.
    """

    def __init__(self, what: str, step: str) -> None:
        self.what = what
        self.step = step
        self.attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = f"_{name}"

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type) -> _T: ...
    def __get__(self, obj: object | None, owner: type) -> Self | _T:
        if obj is None:
            return self
        return _made(getattr(obj, self.attribute), self.what, self.step)

    def __set__(self, obj: object, value: _T) -> None:
        setattr(obj, self.attribute, value)


@dataclass
class DemoState:
    """The demo's shared state; each step adds what it made (see the module docstring)."""

    options: DemoOptions
    log: LogCapture = field(default_factory=LogCapture)
    passphrases: dict[str, str] = field(default_factory=dict, repr=False)
    issuing: dict[Role, CaDirectory] = field(default_factory=dict)
    identities: dict[str, DeviceIdentity] = field(default_factory=dict)
    clients: dict[str, DeviceClient] = field(default_factory=dict)
    element: SecureElement | None = None
    service: ServiceClient | None = None
    impostor: ImpostorServer | None = None
    _root: CaDirectory | None = field(default=None, init=False)
    _registry: Registry | None = field(default=None, init=False)
    _settings: CloudSettings | None = field(default=None, init=False)
    _cloud: CloudThread | None = field(default=None, init=False)
    _api: httpx.Client | None = field(default=None, init=False, repr=False)
    _console_root: Path | None = field(default=None, init=False)

    @property
    def ws(self) -> Path:
        """The workspace directory every file of the demo goes into."""
        return self.options.workspace

    # -- what the steps produce (see ``_Made``) -----------------------------------------

    root = _Made[CaDirectory]("the root CA", "root")
    registry = _Made[Registry]("the registry", "cloud")
    settings = _Made[CloudSettings]("the cloud's settings", "cloud")
    cloud = _Made[CloudThread]("the running cloud", "cloud")
    api = _Made[httpx.Client]("the admin API client", "cloud")
    console_root = _Made[Path]("the console device's pinned root", "console")

    def ca(self, role: Role) -> IssuingCA:
        """The issuing CA for ``role``, its key unlocked with the passphrase held in memory."""
        directory = _made(self.issuing.get(role), f"the {role.value} CA", "issuing")
        return directory.issuing(self.passphrases[role.value])

    def identity(self, serial: str) -> DeviceIdentity:
        """The identity of the device ``serial`` (made at step 4 or 5)."""
        return _made(self.identities.get(serial), f"the identity of {serial}", "factory/console")

    def client(self, serial: str) -> DeviceClient:
        """The connected client of the device ``serial`` (made at step 6)."""
        return _made(self.clients.get(serial), f"the client of {serial}", "connect")

    # -- derived ------------------------------------------------------------------------

    def endpoint(self, port: int | None = None) -> CloudEndpoint:
        """The gateway (or ``port`` on loopback), pinned to the cloud's root file."""
        return CloudEndpoint(
            host="127.0.0.1",
            port=self.cloud.port if port is None else port,
            pinned_ca=self.settings.pinned_ca,
        )

    def console_endpoint(self) -> CloudEndpoint:
        """The console device's endpoint: pinned to the root file the API handed it."""
        return CloudEndpoint(
            host="127.0.0.1", port=self.endpoint().port, pinned_ca=self.console_root
        )

    def call_api(self, path: str, body: dict[str, Any], expected: int) -> dict[str, Any]:
        """POST ``body`` to the admin API as the demo's administrator; its JSON answer.

        DemoApiError when the answer is not ``expected`` (with the API's code and message).
        """
        response = self.api.post(path, json=body)
        if response.status_code != expected:
            raise DemoApiError(
                f"POST {path} answered {response.status_code}: {response.text[:300]}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    # -- releasing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop clients, the impostor, the cloud; close the registry and the secure element."""
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.disconnect()
        self.clients.clear()
        if self._api is not None:
            self._api.close()
        if self.service is not None:
            with contextlib.suppress(Exception):
                self.service.close()
        if self.impostor is not None:
            self.impostor.close()
        if self._cloud is not None:
            with contextlib.suppress(Exception):
                self._cloud.close()
        if self._registry is not None:
            self._registry.close()
        if self.element is not None:
            self.element.close()
        self.log.uninstall()
