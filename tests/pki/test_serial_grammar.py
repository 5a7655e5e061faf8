"""One serial grammar: the CA, the registry, the gateway and the secure element agree.

Each component is asked through its own public door (issuing a certificate, adding a
device, reading a client certificate's identity, naming a key), on generated strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pki import Issued, raw_leaf
from tether.cloud.gateway.identity import HandshakeRefused, subject_name
from tether.cloud.registry import (
    DeviceExistsError,
    InvalidRegistryInputError,
    Provisioning,
    Registry,
)
from tether.errors import TetherError
from tether.pki import IssuingCA, Role, RootCA, generate_key
from tether.secure_element.base import validate_label

_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
SERIALS = st.one_of(
    st.text(alphabet="Aa0._-:/+# ", min_size=0, max_size=70),
    st.text(alphabet=_ALPHABET, min_size=0, max_size=130),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{60,127}", fullmatch=True),
)


@pytest.fixture(scope="module")
def ca() -> IssuingCA:
    return RootCA.generate().create_issuing_ca(common_name="Grammar CA", role=Role.DEVICE)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    path: Path = tmp_path_factory.mktemp("grammar") / "registry.db"
    with Registry.open(f"sqlite:///{path}") as reg:
        yield reg


def _accepted(call: object, *args: object) -> bool:
    try:
        call(*args)  # type: ignore[operator]
    except TetherError:
        return False
    return True


def _registry_accepts(registry: Registry, serial: str) -> bool:
    try:
        registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor="t")
    except DeviceExistsError:  # generated twice: it passed the grammar the first time
        return True
    except InvalidRegistryInputError:
        return False
    return True


def _gateway_accepts(ca: IssuingCA, serial: str) -> bool:
    try:
        ca_key = ca.signer.private_key  # type: ignore[attr-defined]
        leaf = raw_leaf(Issued(ca.certificate, ca_key), serial).certificate
    except ValueError:  # not even encodable as a CN (empty, or over 64 characters)
        return False
    try:
        return subject_name(leaf) == serial
    except HandshakeRefused:
        return False


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(serial=SERIALS)
def test_every_component_accepts_and_refuses_the_same_serials(
    ca: IssuingCA, registry: Registry, serial: str
) -> None:
    key = generate_key().public_key()
    issued = _accepted(ca.issue_device_certificate_for_key, key, serial)
    in_registry = _registry_accepts(registry, serial)
    labelled = _accepted(validate_label, serial)
    at_gateway = _gateway_accepts(ca, serial)
    assert issued == in_registry == labelled == at_gateway, (
        serial, issued, in_registry, labelled, at_gateway,
    )  # fmt: skip
