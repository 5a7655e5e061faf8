"""The factory station against real secure elements (SoftHSM2 and the emulator).

Each unit: a key generated inside the element, a CSR signed by it, a certificate from the
factory CA written back next to the key, a durable JSON-lines record. Every refusal is a
specific ``TetherError`` and leaves the element and the log as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.factory.conftest import CA_PASSPHRASE, Pki, UnitStore, file_state
from tests.softhsm import Token
from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
    StorageError,
    TetherError,
)
from tether.factory import FactoryStation, ManufacturingLog, SerialAlreadyMadeError
from tether.pki import sha256_fingerprint, verify_chain
from tether.secure_element import Pkcs11SecureElement
from tether.secure_element.base import spki_der


def _spki(key: object) -> bytes:
    """The DER SubjectPublicKeyInfo of a P-256 public key, for comparing keys."""
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return spki_der(key)


def station_for(
    pki: Pki, store: UnitStore, log: Path, *, validity: timedelta | None = None
) -> FactoryStation:
    """A station with the session's factory CA over ``store``'s element, logging to ``log``."""
    return FactoryStation(
        pki.factory.issuing(CA_PASSPHRASE), store.element, ManufacturingLog(log), validity=validity
    )


@pytest.mark.tpm
def test_provision_one_unit(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    station = station_for(pki, unit_store, log)
    element = unit_store.element

    device = station.provision("TTH-000042")

    # The key is in the element, and the certificate stored next to it certifies that key.
    assert element.labels() == ["TTH-000042"]
    stored = element.certificate("TTH-000042")
    assert stored is not None
    assert stored == device.certificate
    assert _spki(stored.public_key()) == _spki(element.public_key("TTH-000042"))
    # It chains to the factory CA and the root.
    chain = verify_chain(
        stored,
        intermediates=[pki.factory.certificate],
        roots=[pki.root.certificate],
    )
    assert chain == [stored, pki.factory.certificate, pki.root.certificate]
    # The subject is CN=serial and nothing else.
    assert stored.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TTH-000042")])
    # The record is in the log, and its fingerprint is the certificate's.
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    raw = json.loads(lines[0])
    assert raw["serial"] == "TTH-000042"
    assert raw["certificate_fingerprint"] == sha256_fingerprint(stored)
    assert raw["issuer_fingerprint"] == sha256_fingerprint(pki.factory.certificate)
    assert int(raw["certificate_serial_number"], 16) == stored.serial_number
    assert raw["made_at"]
    [record] = list(ManufacturingLog(log))
    assert record == device.record
    assert record.key_location == element.describe_key("TTH-000042")
    assert record.made_at.tzinfo is not None
    assert stored.not_valid_before_utc <= record.made_at <= stored.not_valid_after_utc


@pytest.mark.tpm
def test_key_protection(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    """A token key cannot leave; the emulator says honestly that its key can."""
    station_for(pki, unit_store, tmp_path / "made.jsonl").provision("TTH-000001")
    protection = unit_store.element.key_protection("TTH-000001")
    if unit_store.kind == "pkcs11":
        assert protection.sensitive is True
        assert protection.extractable is False
        assert protection.value_read_refused is True
        assert protection.cannot_leave
        assert not protection.is_emulator
    else:
        assert protection.is_emulator
        assert not protection.cannot_leave
        assert "not in a secure element" in protection.summary


@pytest.mark.tpm
def test_line_continues_numbering(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    station = station_for(pki, unit_store, log)
    done: list[str] = []
    first = station.provision_line(
        station.next_serials("L-", 3), on_done=lambda d: done.append(d.record.serial)
    )
    assert [d.record.serial for d in first] == ["L-000001", "L-000002", "L-000003"]
    assert done == ["L-000001", "L-000002", "L-000003"]
    # A new station (e.g. the next shift) reads the log and carries on after the highest.
    again = station_for(pki, unit_store, log)
    assert again.next_serials("L-", 2) == ["L-000004", "L-000005"]
    again.provision_line(again.next_serials("L-", 2))
    assert [r.serial for r in ManufacturingLog(log)] == [f"L-00000{n}" for n in range(1, 6)]
    assert unit_store.element.labels() == [f"L-00000{n}" for n in range(1, 6)]
    # Other prefixes and unrelated serials do not disturb the numbering.
    again.provision("X-000900")
    assert again.next_serials("L-", 1) == ["L-000006"]
    assert again.next_serials("M-", 1) == ["M-000001"]


def test_count_must_be_positive(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    station = station_for(pki, unit_store, tmp_path / "made.jsonl")
    for count in (0, -3):
        with pytest.raises(InvalidInputError):
            station.next_serials("TTH-", count)


def _assert_refused(
    store: UnitStore, log: Path, action: Callable[[], object], error: type[TetherError], code: str
) -> TetherError:
    """Run ``action``; it must raise ``error`` with ``code`` and change neither store nor log."""
    before, log_before = store.state(), file_state(log)
    with pytest.raises(error) as caught:
        action()
    assert caught.value.code == code
    assert caught.value.message
    assert store.state() == before
    assert file_state(log) == log_before
    return caught.value


@pytest.mark.tpm
def test_label_already_used(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    """A key made beforehand under the unit's label is refused and left exactly as it was."""
    log = tmp_path / "made.jsonl"
    existing = unit_store.element.generate_key("TTH-000007")
    station = station_for(pki, unit_store, log)
    _assert_refused(
        unit_store, log, lambda: station.provision("TTH-000007"), ConflictError, "se_label_in_use"
    )
    assert _spki(unit_store.element.public_key("TTH-000007")) == _spki(existing)
    assert unit_store.element.certificate("TTH-000007") is None
    assert not log.exists()


def test_serial_already_in_log(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    station = station_for(pki, unit_store, log)
    station.provision("TTH-000001")
    _assert_refused(
        unit_store, log, lambda: station.provision("TTH-000001"),
        SerialAlreadyMadeError, "serial_already_made",
    )  # fmt: skip
    # A new station reads the log: the unit is refused even after its key was removed.
    unit_store.element.delete("TTH-000001")
    fresh = station_for(pki, unit_store, log)
    _assert_refused(
        unit_store, log, lambda: fresh.provision("TTH-000001"),
        SerialAlreadyMadeError, "serial_already_made",
    )  # fmt: skip


@pytest.mark.parametrize(
    "serial", ["", "-starts-with-dash", "has space", "a/b", "é-unicode", "x" * 65, "CN=x,O=y"]
)
def test_invalid_serial(pki: Pki, unit_store: UnitStore, tmp_path: Path, serial: str) -> None:
    log = tmp_path / "made.jsonl"
    station = station_for(pki, unit_store, log)
    _assert_refused(
        unit_store, log, lambda: station.provision(serial), PolicyViolationError,
        "pki_invalid_serial",
    )  # fmt: skip


def test_non_factory_ca_refused(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    device_ca = pki.device.issuing(CA_PASSPHRASE)
    _assert_refused(
        unit_store, log,
        lambda: FactoryStation(device_ca, unit_store.element, ManufacturingLog(log)),
        PolicyViolationError, "wrong_ca_role",
    )  # fmt: skip


@pytest.mark.tpm
def test_failure_after_keygen_deletes_the_key(
    pki: Pki, unit_store: UnitStore, tmp_path: Path
) -> None:
    """A validity past the issuer's fails after the key was generated: the key goes again."""
    log = tmp_path / "made.jsonl"
    station_for(pki, unit_store, log).provision("TTH-000001")
    station = station_for(pki, unit_store, log, validity=timedelta(days=100 * 365))
    _assert_refused(
        unit_store, log, lambda: station.provision("TTH-000002"),
        PolicyViolationError, "pki_validity_out_of_range",
    )  # fmt: skip
    assert unit_store.element.labels() == ["TTH-000001"]
    # The serial is free again: a retry with a valid validity makes the unit.
    retry = station_for(pki, unit_store, log, validity=timedelta(days=30))
    device = retry.provision("TTH-000002")
    assert unit_store.element.labels() == ["TTH-000001", "TTH-000002"]
    lifetime = device.certificate.not_valid_after_utc - device.record.made_at
    assert timedelta(days=29) < lifetime <= timedelta(days=30)


def test_log_failure_deletes_the_key(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    """A log that cannot be written: the unit is not made, its key and certificate are gone."""
    log = tmp_path / "missing-dir" / "made.jsonl"
    station = station_for(pki, unit_store, log)
    error = _assert_refused(
        unit_store,
        log,
        lambda: station.provision("TTH-000001"),
        StorageError,
        "factory_log_unwritable",
    )
    assert str(log) in error.message


def test_corrupt_log_refused(pki: Pki, unit_store: UnitStore, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    log.write_text('{"serial": "TTH-000001"}\n')
    before = unit_store.state()
    with pytest.raises(InvalidInputError) as caught:
        station_for(pki, unit_store, log)
    assert caught.value.code == "factory_log_corrupt"
    assert f"{log}:1" in caught.value.message
    assert unit_store.state() == before
    assert log.read_text() == '{"serial": "TTH-000001"}\n'


@pytest.mark.tpm
def test_wrong_pin(token: Token, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError) as caught:
        Pkcs11SecureElement.open(token.module, token.label, token.pin + "0")
    assert caught.value.code == "se_wrong_pin"
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        assert element.labels() == []


@pytest.mark.tpm
def test_missing_token(token: Token) -> None:
    with pytest.raises(NotFoundError) as caught:
        Pkcs11SecureElement.open(token.module, "no-such-token", token.pin)
    assert caught.value.code == "se_token_not_found"


def test_missing_module(token: Token, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Pkcs11SecureElement.open(str(tmp_path / "libmissing.so"), token.label, token.pin)
    assert caught.value.code == "se_module_not_found"
