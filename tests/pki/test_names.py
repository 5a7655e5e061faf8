"""Serials, names and roles: the only text that reaches a certificate subject."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import PolicyViolationError
from tether.pki import IssuingCA, Role, RootCA, device_serial_of, role_of, validate_serial
from tether.pki.errors import InvalidNameError, InvalidSerialError, NotATetherCaError
from tether.pki.keys import generate_key
from tether.pki.names import parse_role, validate_dns_name

SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_REST = _FIRST + "._-"


@given(st.text(alphabet=_FIRST, min_size=1, max_size=1), st.text(alphabet=_REST, max_size=63))
def test_every_serial_matching_the_pattern_is_accepted(first: str, rest: str) -> None:
    assert validate_serial(first + rest) == first + rest


@given(st.text(max_size=80))
def test_anything_else_is_refused(candidate: str) -> None:
    # fullmatch on str semantics: "$" in the documented regex must not admit a trailing "\n".
    if SERIAL_RE.match(candidate) and not candidate.endswith("\n"):
        assert validate_serial(candidate) == candidate
    else:
        with pytest.raises(InvalidSerialError) as info:
            validate_serial(candidate)
        assert info.value.code == "pki_invalid_serial"
        assert isinstance(info.value, PolicyViolationError)


@pytest.mark.parametrize(
    "bad",
    ["", "-lead", ".lead", "a" * 65, "dev 001", "dév-001", "dev-001\n", "a/b", "a@b", "x\x00"],
)
def test_named_bad_serials_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSerialError):
        validate_serial(bad)


def test_longest_serial_is_accepted() -> None:
    assert validate_serial("a" * 64) == "a" * 64


def test_role_is_read_from_the_issuing_ca_subject(root: RootCA, device_ca: IssuingCA) -> None:
    assert role_of(device_ca.certificate) is Role.DEVICE
    assert device_ca.role is Role.DEVICE
    assert device_ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[
        0
    ].value == ("tether:device")
    with pytest.raises(NotATetherCaError):
        role_of(root.certificate)


def test_unknown_role_names_are_refused() -> None:
    with pytest.raises(InvalidNameError):
        parse_role("admin")
    assert parse_role("service") is Role.SERVICE


def test_device_serial_of_reads_a_device_certificate(device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate_for_key(generate_key().public_key(), "unit-42")
    assert device_serial_of(cert) == "unit-42"


def test_device_serial_of_refuses_a_ca_certificate(device_ca: IssuingCA) -> None:
    with pytest.raises(InvalidSerialError):
        device_serial_of(device_ca.certificate)


def test_device_serial_of_refuses_an_invalid_cn(root: RootCA) -> None:
    assert [a.oid for a in root.certificate.subject] == [NameOID.COMMON_NAME]
    # "Test Root CA" has spaces: a CN, but not a serial.
    with pytest.raises(InvalidSerialError):
        device_serial_of(root.certificate)


@pytest.mark.parametrize("bad", ["", "*.example.com", "-a.example", "a..b", "ex ample.com", "é.fr"])
def test_bad_dns_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_dns_name(bad)


def test_dns_names_are_normalised() -> None:
    assert validate_dns_name("Gateway.Example.COM.") == "gateway.example.com"


def test_name_objects_are_not_confused_with_strings() -> None:
    with pytest.raises(InvalidSerialError):
        validate_serial(x509.Name([]))  # type: ignore[arg-type]
