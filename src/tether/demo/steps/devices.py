"""Steps 4 and 5: a device made in the factory (key in its secure element), one in the console."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.cloud.registry import Provisioning
from tether.demo.state import DemoState
from tether.demo.steps.common import (
    ADMIN,
    CONSOLE_SERIAL,
    FACTORY_SERIAL,
    Outcome,
    new_passphrase,
    short,
    write,
    write_key,
)
from tether.device import DeviceIdentity, FileKey, Pkcs11Key
from tether.factory.records import ManufacturingLog
from tether.factory.station import FactoryStation
from tether.pki import Role
from tether.pki.store import pem
from tether.secure_element import EmulatedSecureElement, Pkcs11SecureElement, SecureElement


def _open_element(state: DemoState) -> SecureElement:
    token = state.options.softhsm
    if token is not None:
        return Pkcs11SecureElement.open(token.module, token.label, token.pin)
    passphrase = new_passphrase()
    state.passphrases["emulator"] = passphrase
    return EmulatedSecureElement.open(state.ws / "emulator", passphrase)


def _device_files(state: DemoState, serial: str, certificate: x509.Certificate) -> Path:
    return write(state.ws / "devices" / serial / "device.crt.pem", pem(certificate))


def factory_device(state: DemoState) -> Outcome:
    """The factory station makes a unit: key in the element, certificate from a CSR."""
    element = _open_element(state)
    state.element = element
    station = FactoryStation(
        state.ca(Role.FACTORY),
        element,
        ManufacturingLog(write(state.ws / "factory" / "manufacturing.jsonl", b"")),
    )
    made = station.provision(FACTORY_SERIAL)
    certificate_path = _device_files(state, FACTORY_SERIAL, made.certificate)
    protection = element.key_protection(FACTORY_SERIAL)
    token = state.options.softhsm
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
        encrypted = (state.ws / "emulator" / f"{FACTORY_SERIAL}.key.pem").read_bytes()
        private = serialization.load_pem_private_key(
            encrypted, state.passphrases["emulator"].encode()
        )
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        key = FileKey(write_key(state.ws / "devices" / FACTORY_SERIAL / "device.key.pem", private))
        where = "SOFTWARE EMULATOR (no SoftHSM2 here): the key is a file on this host"
        passed = protection.is_emulator
        observed = "key made in the software emulator (it says so: not a secure element)"
    state.identities[FACTORY_SERIAL] = DeviceIdentity.load(certificate_path, key)
    return Outcome(
        observed,
        passed,
        (
            f"{FACTORY_SERIAL}: {where}",
            f"CSR signed in the element -> factory CA -> certificate sha256 "
            f"{short(made.record.certificate_fingerprint)} written back; log record kept",
        ),
    )


def console_device(state: DemoState) -> Outcome:
    """The console creates a device: the API makes its key and returns the files once."""
    bundle = state.call_api("/api/v1/devices", {"serial": CONSOLE_SERIAL}, 201)
    folder = state.ws / "devices" / CONSOLE_SERIAL
    root_path = write(folder / "pinned-ca.pem", bundle["pinned_ca_pem"].encode())
    certificate_path = write(folder / "device.crt.pem", bundle["certificate_pem"].encode())
    key_bytes = bundle["private_key_pem"].encode()
    key_path = write(folder / "device.key.pem", key_bytes, 0o600)
    state.console_root = root_path
    state.identities[CONSOLE_SERIAL] = DeviceIdentity.load(certificate_path, FileKey(key_path))
    certificate = bundle["certificate"]
    warning = str(bundle.get("key_escrow_warning", ""))
    stored = [p for p in state.settings.data_dir.rglob("*") if p.is_file()]
    kept = any(key_bytes.strip() in p.read_bytes() for p in stored)
    passed = (
        not kept
        and bool(warning)
        and certificate["state"] == "active"
        and bundle["device"]["provisioning"] == Provisioning.CONSOLE.value
        and root_path.read_bytes() == state.settings.pinned_ca.read_bytes()
    )
    return Outcome(
        "201 Created: three files returned once, with a key escrow warning; "
        + ("the cloud kept no copy of the key" if not kept else "the cloud KEPT the key"),
        passed,
        (
            f'POST /api/v1/devices {{"serial": "{CONSOLE_SERIAL}"}} as {ADMIN!r} '
            "(bearer token, HTTPS pinned to the demo root)",
            f"{CONSOLE_SERIAL}: certificate sha256 {short(certificate['fingerprint'])} from "
            f"the online device CA, registered ({bundle['device']['provisioning']}); "
            f"files in {folder.relative_to(state.ws)}: pinned-ca.pem, device.crt.pem, "
            "device.key.pem (0600)",
            f"key_escrow_warning: {warning or 'MISSING'}",
        ),
    )
