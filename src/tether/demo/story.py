"""The story of DESIGN.md, run for real: ten steps, each returning what it observed.

``Demo.run()`` yields one ``StepResult`` per step as soon as the step is done, so the CLI can
tell the story while it happens. A step passes when the system behaved as it should, which
for steps 8-10 means a refusal. A step that raises is a failed step with the error as its
observation; the steps after it are reported as not run (they depend on it). ``close()``
stops every client, the cloud and the secure element; the CLI removes the workspace.

Secrets: the CA passphrases, the emulator passphrase, the token PIN and the admin API token
are random, held in memory only and never returned in full (a result shows at most a
four-character hint).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.cloud.admin import create_admin
from tether.cloud.api import ApiServer, create_app
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CARole, Provisioning, Registry
from tether.cloud.service import CloudService
from tether.cloud.settings import CloudSettings, GatewayOptions
from tether.cloud.setup import init_data_dir
from tether.demo.cloud import CloudThread, LogCapture, LogEvent
from tether.demo.errors import DemoApiError
from tether.demo.peers import ImpostorServer, ServiceClient
from tether.demo.results import StepResult
from tether.demo.workspace import SoftHsmToken, TpmToken
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity, FileKey, Pkcs11Key
from tether.device.explain import explain_steps
from tether.device.preflight import probe_server
from tether.errors import TetherError
from tether.factory.records import ManufacturingLog
from tether.factory.station import FactoryStation
from tether.pki import IssuingCA, Role, RootCA, generate_key, sha256_fingerprint
from tether.pki.keys import private_key_pem
from tether.pki.store import CaDirectory, init_issuing, init_root, pem
from tether.secure_element import EmulatedSecureElement, Pkcs11SecureElement, SecureElement

ACTOR = "demo:operator"
ADMIN = "demo-admin"
FACTORY_SERIAL = "TTH-000001"
CONSOLE_SERIAL = "CON-000001"
ROGUE_SERIAL = "TTH-666666"
SERVICE_NAME = "demo-ingest"
ISSUING_ROLES = (Role.FACTORY, Role.DEVICE, Role.SERVICE, Role.SERVER)
# A refused handshake needs no more than this: the gateway answers at once, the device agent
# diagnoses an untrusted server after about a second.
REFUSAL_TIMEOUT_S = 4.0
LOG_WAIT_S = 5.0
# What the gateway logs when it refuses a client certificate during or after TLS.
CLIENT_REFUSAL_CODES = frozenset(
    {"ca_not_registered", "certificate_signature_invalid", "certificate_verify_failed"}
)

STEP_TITLES: dict[int, tuple[str, str, str]] = {
    1: ("root", "Root ceremony", "an offline root CA with an encrypted key"),
    2: ("issuing", "Issuing CAs", "factory, device, service and server CAs signed by the root"),
    3: ("cloud", "The cloud starts", "gateway and API up; factory (JIT), device, service CAs"),
    4: ("factory", "A device made in the factory", "key generated in the secure element"),
    5: ("console", "A device created in the console", "three files returned once, with a warning"),
    6: ("connect", "Both devices connect", "mutual TLS accepted, CONNACK SUCCESS for both"),
    7: ("message", "Telemetry up, a command down", "sender attributed; command delivered"),
    8: ("rogue", "A device from a rogue CA", "refused; the gateway logs why"),
    9: ("impostor", "A man-in-the-middle server", "the device refuses: server_not_trusted"),
    10: ("revoke", "Revocation drops a live device", "session dropped; reconnect refused"),
}


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo works and which secure element it uses (``softhsm`` None: emulator).

    ``softhsm`` is any PKCS#11 token the demo made: SoftHSM2 or one on a simulated TPM.
    """

    workspace: Path
    softhsm: SoftHsmToken | TpmToken | None
    timeout: float = 10.0


@dataclass(frozen=True)
class _Outcome:
    observed: str
    passed: bool
    lines: tuple[str, ...]


def _passphrase() -> str:
    return secrets.token_urlsafe(24)


def _hint(secret: str) -> str:
    return f"{secret[:4]}… ({len(secret)} random characters, kept in memory only)"


def _short(fingerprint: str) -> str:
    return fingerprint[:16] + "…"


def _cn(name: x509.Name) -> str:
    return name.rfc4514_string()


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    return _write(path, private_key_pem(key), 0o600)


class Demo:
    """Runs the ten steps in order; holds what they share; ``close`` releases all of it."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.ws = options.workspace
        self.log = LogCapture()
        self._passphrases: dict[str, str] = {}
        self._issuing: dict[Role, CaDirectory] = {}
        self._root: CaDirectory | None = None
        self._registry: Registry | None = None
        self._settings: CloudSettings | None = None
        self._cloud: CloudThread | None = None
        self._api: httpx.Client | None = None
        self._console_root: Path | None = None
        self._element: SecureElement | None = None
        self._identities: dict[str, DeviceIdentity] = {}
        self._clients: dict[str, DeviceClient] = {}
        self._service: ServiceClient | None = None
        self._impostor: ImpostorServer | None = None

    # -- running ------------------------------------------------------------------------

    def run(self) -> Iterator[StepResult]:
        """Run every step in order, yielding each result when the step ends."""
        steps: list[Callable[[], _Outcome]] = [
            self.root_ceremony,
            self.issuing_cas,
            self.cloud_starts,
            self.factory_device,
            self.console_device,
            self.devices_connect,
            self.message_and_command,
            self.rogue_device,
            self.impostor_server,
            self.revocation,
        ]
        self.log.install()
        failed: int | None = None
        for number, step in enumerate(steps, start=1):
            name, title, expectation = STEP_TITLES[number]
            if failed is not None:
                yield StepResult(
                    number, name, title, expectation, f"not run: step {failed} failed", False
                )
                continue
            started = time.perf_counter()
            try:
                outcome = step()
            except TetherError as exc:
                outcome = _Outcome(f"error ({exc.code}): {exc.message}", False, ())
            except Exception as exc:  # a bug: report it as the step's failure, keep the story
                outcome = _Outcome(f"unexpected {type(exc).__name__}: {exc}", False, ())
            if not outcome.passed:
                failed = number
            yield StepResult(
                number=number,
                name=name,
                title=title,
                expectation=expectation,
                observed=outcome.observed,
                passed=outcome.passed,
                lines=outcome.lines,
                seconds=time.perf_counter() - started,
            )

    def close(self) -> None:
        """Stop clients, the impostor, the cloud; close the registry and the secure element."""
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.disconnect()
        self._clients.clear()
        if self._api is not None:
            self._api.close()
        if self._service is not None:
            with contextlib.suppress(Exception):
                self._service.close()
        if self._impostor is not None:
            self._impostor.close()
        if self._cloud is not None:
            with contextlib.suppress(Exception):
                self._cloud.close()
        if self._registry is not None:
            self._registry.close()
        if self._element is not None:
            self._element.close()
        self.log.uninstall()

    def gateway_events(self) -> list[LogEvent]:
        """Everything the cloud logged during the run (for ``--keep`` and debugging)."""
        return self.log.since(0)

    # -- helpers ------------------------------------------------------------------------

    def _ca(self, role: Role) -> IssuingCA:
        return self._issuing[role].issuing(self._passphrases[role.value])

    def _endpoint(self, port: int | None = None) -> CloudEndpoint:
        assert self._settings is not None and self._cloud is not None
        return CloudEndpoint(
            host="127.0.0.1",
            port=self._cloud.port if port is None else port,
            pinned_ca=self._settings.pinned_ca,
        )

    def _device_files(self, serial: str, certificate: x509.Certificate) -> Path:
        return _write(self.ws / "devices" / serial / "device.crt.pem", pem(certificate))

    def _console_endpoint(self) -> CloudEndpoint:
        """The console device's endpoint: pinned to the root file the API handed it."""
        assert self._console_root is not None
        return CloudEndpoint(
            host="127.0.0.1", port=self._endpoint().port, pinned_ca=self._console_root
        )

    def _call_api(self, path: str, body: dict[str, Any], expected: int) -> dict[str, Any]:
        """POST ``body`` to the admin API as the demo's administrator; its JSON answer.

        DemoApiError when the answer is not ``expected`` (with the API's code and message).
        """
        assert self._api is not None
        response = self._api.post(path, json=body)
        if response.status_code != expected:
            raise DemoApiError(
                f"POST {path} answered {response.status_code}: {response.text[:300]}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    # -- 1. root ceremony ---------------------------------------------------------------

    def root_ceremony(self) -> _Outcome:
        """The offline ceremony: a root CA directory whose key is encrypted at rest."""
        passphrase = _passphrase()
        self._passphrases["root"] = passphrase
        root = init_root(self.ws / "ceremony" / "root-ca", passphrase, common_name="Demo Root CA")
        self._root = root
        key_file = root.path / root.metadata.key.path
        encrypted = key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        return _Outcome(
            "self-signed P-256 root; key encrypted (PKCS#8, PBKDF2)"
            if encrypted
            else "the root key is NOT encrypted",
            encrypted,
            (
                f"{_cn(root.certificate.subject)}  "
                f"sha256 {_short(sha256_fingerprint(root.certificate))}",
                f"key {key_file.relative_to(self.ws)} (mode 0600), passphrase {_hint(passphrase)}",
            ),
        )

    # -- 2. issuing CAs -----------------------------------------------------------------

    def issuing_cas(self) -> _Outcome:
        """One issuing CA per role, each signed by the root (the root signs nothing else)."""
        assert self._root is not None
        lines = []
        for role in ISSUING_ROLES:
            passphrase = _passphrase()
            self._passphrases[role.value] = passphrase
            directory = init_issuing(
                self.ws / "issuing" / role.value,
                self._root,
                self._passphrases["root"],
                passphrase,
                common_name=f"Demo {role.value.capitalize()} CA",
                role=role,
            )
            directory.certificate.verify_directly_issued_by(self._root.certificate)
            self._issuing[role] = directory
            lines.append(
                f"{role.value:<8} {_cn(directory.certificate.subject)}  "
                f"sha256 {_short(sha256_fingerprint(directory.certificate))}"
            )
        lines.append("each verified as signed by the root; pathLen 0, so they sign only leaves")
        return _Outcome("4 issuing CAs, each signed by the root", True, tuple(lines))

    # -- 3. the cloud -------------------------------------------------------------------

    def cloud_starts(self) -> _Outcome:
        """Data directory, registry with three client CAs, gateway on a free loopback port."""
        assert self._root is not None
        settings = init_data_dir(
            self.ws / "cloud",
            server_ca=self._ca(Role.SERVER),
            root_ca=pem(self._root.certificate),
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
            gateway=GatewayOptions(host="127.0.0.1", port=0),
        )
        self._settings = settings
        registry = Registry.open(settings.database_url)
        self._registry = registry
        for role, ca_role, jit in (
            (Role.FACTORY, CARole.FACTORY, True),
            (Role.DEVICE, CARole.DEVICE, False),
            (Role.SERVICE, CARole.SERVICE, False),
        ):
            registry.register_ca(
                self._issuing[role].certificate,
                role=ca_role,
                allow_auto_registration=jit,
                actor=ACTOR,
            )
        self._cloud = CloudThread(CloudService(registry, settings.gateway_settings()))
        port = self._cloud.start()
        # The admin API, as `tether cloud serve` runs it: same loop, the gateway's certificate,
        # the device CA online for console provisioning, one administrator token (in memory).
        root_certificate = self._root.certificate
        operations = AdminOperations(
            registry,
            root_certificate=root_certificate,
            online_ca=self._ca(Role.DEVICE),
            pinned_ca=settings.pinned_ca.read_bytes(),
        )
        api_port = self._cloud.start_api(
            ApiServer(
                create_app(registry, root_certificate=root_certificate, operations=operations),
                host="127.0.0.1",
                port=0,
                certificate_chain=settings.server_chain,
                private_key=settings.server_key,
            )
        )
        admin = create_admin(registry, ADMIN, actor=ACTOR)
        self._api = httpx.Client(
            base_url=f"https://127.0.0.1:{api_port}",
            verify=ssl.create_default_context(cafile=str(settings.pinned_ca)),
            timeout=self.options.timeout,
            headers={"Authorization": f"Bearer {admin.token}"},
        )
        registered = len(registry.list_cas())
        listening = self.log.wait_for({"gateway_listening"}, after=0, timeout=1.0) is not None
        # The cloud holds exactly one private key, its own; never the root's or a device's.
        keys = sorted(
            p.name
            for p in settings.data_dir.rglob("*")
            if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()
        )
        return _Outcome(
            f"gateway on 127.0.0.1:{port}, API on {api_port}; {registered} client CAs registered",
            registered == 3 and listening and keys == [settings.server_key.name],
            (
                f"gateway 127.0.0.1:{port} (MQTT 5 over mutual TLS, uvloop thread), "
                "server certificate from the server CA",
                f"admin API https://127.0.0.1:{api_port} on the same loop (device CA online for "
                f"console provisioning); admin {ADMIN!r}, its token in memory only",
                f"registry {settings.database_url.rsplit('/', 1)[-1]} (SQLite): factory CA "
                "(just-in-time registration on), device CA, service CA",
                f"private keys in the cloud's directory: {', '.join(keys)} only (root key stays "
                "in the ceremony directory)",
            ),
        )

    # -- 4. factory device --------------------------------------------------------------

    def _open_element(self) -> SecureElement:
        token = self.options.softhsm
        if token is not None:
            return Pkcs11SecureElement.open(token.module, token.label, token.pin)
        passphrase = _passphrase()
        self._passphrases["emulator"] = passphrase
        return EmulatedSecureElement.open(self.ws / "emulator", passphrase)

    def factory_device(self) -> _Outcome:
        """The factory station makes a unit: key in the element, certificate from a CSR."""
        element = self._open_element()
        self._element = element
        station = FactoryStation(
            self._ca(Role.FACTORY),
            element,
            ManufacturingLog(_write(self.ws / "factory" / "manufacturing.jsonl", b"")),
        )
        made = station.provision(FACTORY_SERIAL)
        certificate_path = self._device_files(FACTORY_SERIAL, made.certificate)
        protection = element.key_protection(FACTORY_SERIAL)
        token = self.options.softhsm
        if token is not None:
            key: Pkcs11Key | FileKey = Pkcs11Key(
                module=token.module,
                token_label=token.label,
                key_label=FACTORY_SERIAL,
                pin=token.pin,
            )
            where = protection.summary
            passed = protection.cannot_leave
            observed = (
                "key made in the token; sensitive, not extractable, CKA_VALUE read refused"
                if passed
                else f"the token key is readable: {protection.summary}"
            )
        else:
            # The emulator's key is a passphrase-encrypted file; the device agent (awscrt)
            # needs it in clear, which is exactly what a secure element prevents.
            encrypted = (self.ws / "emulator" / f"{FACTORY_SERIAL}.key.pem").read_bytes()
            private = serialization.load_pem_private_key(
                encrypted, self._passphrases["emulator"].encode()
            )
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            key = FileKey(
                _write_key(self.ws / "devices" / FACTORY_SERIAL / "device.key.pem", private)
            )
            where = "SOFTWARE EMULATOR (no SoftHSM2 here): the key is a file on this host"
            passed = protection.is_emulator
            observed = "key made in the software emulator (it says so: not a secure element)"
        self._identities[FACTORY_SERIAL] = DeviceIdentity.load(certificate_path, key)
        return _Outcome(
            observed,
            passed,
            (
                f"{FACTORY_SERIAL}: {where}",
                f"CSR signed in the element -> factory CA -> certificate sha256 "
                f"{_short(made.record.certificate_fingerprint)} written back; log record kept",
            ),
        )

    # -- 5. console device ---------------------------------------------------------------

    def console_device(self) -> _Outcome:
        """The console creates a device: the API makes its key and returns the files once."""
        assert self._settings is not None
        bundle = self._call_api("/api/v1/devices", {"serial": CONSOLE_SERIAL}, 201)
        folder = self.ws / "devices" / CONSOLE_SERIAL
        root_path = _write(folder / "pinned-ca.pem", bundle["pinned_ca_pem"].encode())
        certificate_path = _write(folder / "device.crt.pem", bundle["certificate_pem"].encode())
        key_bytes = bundle["private_key_pem"].encode()
        key_path = _write(folder / "device.key.pem", key_bytes, 0o600)
        self._console_root = root_path
        self._identities[CONSOLE_SERIAL] = DeviceIdentity.load(certificate_path, FileKey(key_path))
        certificate = bundle["certificate"]
        warning = str(bundle.get("key_escrow_warning", ""))
        stored = [p for p in self._settings.data_dir.rglob("*") if p.is_file()]
        kept = any(key_bytes.strip() in p.read_bytes() for p in stored)
        passed = (
            not kept
            and bool(warning)
            and certificate["state"] == "active"
            and bundle["device"]["provisioning"] == Provisioning.CONSOLE.value
            and root_path.read_bytes() == self._settings.pinned_ca.read_bytes()
        )
        return _Outcome(
            "201 Created: three files returned once, with a key escrow warning; "
            + ("the cloud kept no copy of the key" if not kept else "the cloud KEPT the key"),
            passed,
            (
                f'POST /api/v1/devices {{"serial": "{CONSOLE_SERIAL}"}} as {ADMIN!r} '
                "(bearer token, HTTPS pinned to the demo root)",
                f"{CONSOLE_SERIAL}: certificate sha256 {_short(certificate['fingerprint'])} from "
                f"the online device CA, registered ({bundle['device']['provisioning']}); "
                f"files in {folder.relative_to(self.ws)}: pinned-ca.pem, device.crt.pem, "
                "device.key.pem (0600)",
                f"key_escrow_warning: {warning or 'MISSING'}",
            ),
        )

    # -- 6. both connect ----------------------------------------------------------------

    def devices_connect(self) -> _Outcome:
        """Both devices connect; the factory one with the five handshake steps explained."""
        assert self._registry is not None and self._cloud is not None
        timeout = self.options.timeout
        endpoint = self._endpoint()
        identity = self._identities[FACTORY_SERIAL]
        server = probe_server(identity, endpoint, timeout)
        server.require_trusted(endpoint)
        first = DeviceClient(identity, endpoint)
        self._clients[FACTORY_SERIAL] = first
        verdict = first.connect(timeout)
        assert first.key_facts is not None
        steps = explain_steps(identity, endpoint, server, first.key_facts, verdict)
        facts = {step.number: step.facts for step in steps}
        second = DeviceClient(self._identities[CONSOLE_SERIAL], self._console_endpoint())
        self._clients[CONSOLE_SERIAL] = second
        verdict2 = second.connect(timeout)
        connected = {i.name for i in self._cloud.sessions()}
        jit = self._registry.get_device(FACTORY_SERIAL).provisioning
        passed = (
            verdict.reason_code == 0
            and verdict2.reason_code == 0
            and {FACTORY_SERIAL, CONSOLE_SERIAL} <= connected
            and jit == Provisioning.JIT
        )
        return _Outcome(
            f"CONNACK {verdict.reason_name} for both; {FACTORY_SERIAL} registered just in time",
            passed,
            (
                f"(1) server {facts[1].get('server subject', '?')} chains to the pinned "
                f"{facts[1]['pinned CA']}: {facts[1]['verdict']}",
                f"(2) device presents {facts[2]['subject']} issued by {facts[2]['issuer']}",
                f"(3) {facts[3]['handshake signature']}",
                f"(4) registry: CA registered, certificate unknown -> registered just in time "
                f"({jit}); CONNACK {facts[4]['CONNACK reason code']}",
                f"(5) {facts[5]['TLS version']} {facts[5]['cipher']}",
                f"{CONSOLE_SERIAL} (its three files from the console): CONNACK "
                f"{verdict2.reason_name}",
            ),
        )

    # -- 7. message and command ---------------------------------------------------------

    def message_and_command(self) -> _Outcome:
        """Telemetry reaches a service attributed by the gateway; a command reaches the device."""
        assert self._registry is not None and self._cloud is not None
        assert self._settings is not None
        service_ca = self._ca(Role.SERVICE)
        private = generate_key()
        certificate = service_ca.issue_service_certificate(private.public_key(), name=SERVICE_NAME)
        key_path = _write_key(self.ws / "service" / "service.key.pem", private)
        certificate_path = _write(self.ws / "service" / "service.crt.pem", pem(certificate))
        self._registry.add_device(SERVICE_NAME, provisioning=Provisioning.CONSOLE, actor=ACTOR)
        self._registry.add_certificate(
            certificate,
            device_serial=SERVICE_NAME,
            issuer_fingerprint=sha256_fingerprint(service_ca.certificate),
            actor=ACTOR,
        )
        service = ServiceClient(
            SERVICE_NAME,
            certificate=certificate_path,
            key=key_path,
            pinned_ca=self._settings.pinned_ca,
        )
        self._service = service
        timeout = self.options.timeout
        service.connect("127.0.0.1", self._cloud.port, timeout)
        service.subscribe("devices/+/telemetry", timeout)
        device = self._clients[FACTORY_SERIAL]
        telemetry = f"devices/{FACTORY_SERIAL}/telemetry"
        device.publish(telemetry, b'{"temp_c": 21.5}', qos=1, timeout=timeout)
        received = service.receive(timeout)
        sender = dict(received.user_properties).get("tether-sender")
        command = f"devices/{FACTORY_SERIAL}/commands/reboot"
        device.subscribe(f"devices/{FACTORY_SERIAL}/commands/#", qos=1, timeout=timeout)
        service.publish(command, b'{"delay_s": 5}', timeout)
        delivered = device.receive(timeout)
        passed = (
            received.topic == telemetry
            and sender == FACTORY_SERIAL
            and delivered.topic == command
            and delivered.payload == b'{"delay_s": 5}'
        )
        return _Outcome(
            f"service got the telemetry with tether-sender={sender}; device got the command",
            passed,
            (
                f"{SERVICE_NAME} (paho, service certificate) <- {received.topic} "
                f"{received.payload.decode()}  tether-sender={sender} (set by the gateway "
                "from the certificate, not by the client)",
                f"{FACTORY_SERIAL} <- {delivered.topic} {delivered.payload.decode()} "
                f"(published by {SERVICE_NAME})",
            ),
        )

    # -- 8. rogue CA --------------------------------------------------------------------

    def rogue_device(self) -> _Outcome:
        """A device whose CA was never registered: the gateway refuses it during TLS."""
        rogue_root = RootCA.generate("Rogue Root CA")
        rogue_ca = rogue_root.create_issuing_ca(common_name="Rogue Factory CA", role=Role.FACTORY)
        private = generate_key()
        certificate = rogue_ca.issue_device_certificate_for_key(private.public_key(), ROGUE_SERIAL)
        directory = self.ws / "rogue"
        identity = DeviceIdentity.load(
            _write(directory / "device.crt.pem", pem(certificate)),
            FileKey(_write_key(directory / "device.key.pem", private)),
        )
        mark = self.log.mark()
        refused: TetherError | None = None
        client = DeviceClient(identity, self._endpoint())
        try:
            client.connect(REFUSAL_TIMEOUT_S)
        except TetherError as exc:
            refused = exc
        finally:
            client.disconnect()
        event = self.log.wait_for(CLIENT_REFUSAL_CODES, after=mark, timeout=LOG_WAIT_S)
        device_side = f"{refused.code}" if refused is not None else "CONNECTED (wrong)"
        gateway_side = event.message if event is not None else "nothing logged"
        return _Outcome(
            f"refused: gateway {event.code if event else 'logged nothing'}, device {device_side}",
            refused is not None and event is not None,
            (
                f"{ROGUE_SERIAL} from 'Rogue Factory CA' (never registered): connect failed "
                f"({device_side})",
                f"gateway log: {gateway_side}",
            ),
        )

    # -- 9. impostor server -------------------------------------------------------------

    def impostor_server(self) -> _Outcome:
        """A TLS server with a certificate from another CA: the device refuses to talk to it."""
        impostor_root = RootCA.generate("Impostor Root CA")
        impostor_ca = impostor_root.create_issuing_ca(
            common_name="Impostor Server CA", role=Role.SERVER
        )
        private = generate_key()
        certificate = impostor_ca.issue_server_certificate(
            private.public_key(),
            dns_names=["localhost"],
            ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        )
        directory = self.ws / "impostor"
        chain = _write(
            directory / "server.chain.pem", pem(certificate) + pem(impostor_ca.certificate)
        )
        key_path = _write_key(directory / "server.key.pem", private)
        self._impostor = ImpostorServer(chain, key_path)
        endpoint = self._endpoint(self._impostor.port)
        refused: TetherError | None = None
        client = DeviceClient(self._identities[FACTORY_SERIAL], endpoint)
        try:
            client.connect(REFUSAL_TIMEOUT_S)
        except TetherError as exc:
            refused = exc
        finally:
            client.disconnect()
        code = refused.code if refused is not None else "connected (wrong)"
        return _Outcome(
            f"device refused the server: {code}",
            code == "server_not_trusted",
            (
                f"impostor 127.0.0.1:{self._impostor.port} presents {_cn(certificate.subject)} "
                "for 127.0.0.1 from 'Impostor Server CA' (same names, wrong CA)",
                f"{FACTORY_SERIAL} refused it: {code} (trust is the pinned root only)",
            ),
        )

    # -- 10. revocation -----------------------------------------------------------------

    def revocation(self) -> _Outcome:
        """Revoke the console device's certificate while it is connected."""
        assert self._registry is not None and self._cloud is not None
        identity = self._identities[CONSOLE_SERIAL]
        fingerprint = sha256_fingerprint(identity.load_certificate())
        mark = self.log.mark()
        started = time.perf_counter()
        revoked = self._call_api(
            f"/api/v1/certificates/{fingerprint}/revoke", {"reason": "key_compromise"}, 200
        )
        dropped = self.log.wait_for(
            {"session_dropped"}, after=mark, identity=CONSOLE_SERIAL, timeout=LOG_WAIT_S
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        still = CONSOLE_SERIAL in {i.name for i in self._cloud.sessions()}
        self._clients.pop(CONSOLE_SERIAL).disconnect()  # stop its automatic reconnects
        mark = self.log.mark()
        refused: TetherError | None = None
        client = DeviceClient(identity, self._console_endpoint())
        try:
            client.connect(REFUSAL_TIMEOUT_S)
        except TetherError as exc:
            refused = exc
        finally:
            client.disconnect()
        reason = self.log.wait_for({"certificate_revoked"}, after=mark, timeout=LOG_WAIT_S)
        passed = (
            revoked["state"] == "revoked"
            and dropped is not None
            and not still
            and refused is not None
            and reason is not None
        )
        return _Outcome(
            f"dropped in {elapsed_ms:.0f} ms; reconnect refused "
            f"({reason.code if reason else 'no gateway reason'})"
            if dropped is not None
            else "the live session was NOT dropped",
            passed,
            (
                f"POST /api/v1/certificates/{_short(fingerprint)}/revoke (key_compromise) -> "
                f"{revoked['state']}; the cloud's feed dropped {CONSOLE_SERIAL}'s live session "
                f"in {elapsed_ms:.0f} ms "
                "(DISCONNECT 0x98 administrative action)",
                f"reconnect: {refused.code if refused else 'ACCEPTED (wrong)'}; gateway log: "
                + (reason.message if reason else "nothing"),
            ),
        )
