"""An in-memory Tether hierarchy shared by the PKI tests (keys are made by the test run)."""

from __future__ import annotations

import pytest

from tether.pki import IssuingCA, Role, RootCA


@pytest.fixture(scope="session")
def root() -> RootCA:
    return RootCA.generate(common_name="Test Root CA")


@pytest.fixture(scope="session")
def device_ca(root: RootCA) -> IssuingCA:
    return root.create_issuing_ca(common_name="Test Device CA", role=Role.DEVICE)


@pytest.fixture(scope="session")
def factory_ca(root: RootCA) -> IssuingCA:
    return root.create_issuing_ca(common_name="Test Factory CA", role=Role.FACTORY)


@pytest.fixture(scope="session")
def server_ca(root: RootCA) -> IssuingCA:
    return root.create_issuing_ca(common_name="Test Server CA", role=Role.SERVER)


@pytest.fixture(scope="session")
def service_ca(root: RootCA) -> IssuingCA:
    return root.create_issuing_ca(common_name="Test Service CA", role=Role.SERVICE)
