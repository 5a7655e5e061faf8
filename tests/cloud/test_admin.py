"""Admin tokens: scrypt-checked, and a verified token remembered only while it stays valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.cloud.admin import (
    AdminCredentialError,
    authenticate,
    create_admin,
    forget_verified_tokens,
)
from tether.cloud.registry import Registry


@pytest.fixture
def registry(tmp_path: Path):
    forget_verified_tokens()
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as opened:
        yield opened
    forget_verified_tokens()


def test_a_verified_token_is_remembered_but_a_wrong_secret_for_the_same_id_is_not(
    registry: Registry,
) -> None:
    issued = create_admin(registry, "ops", actor="test")
    assert authenticate(registry, issued.token).name == "ops"
    assert authenticate(registry, issued.token).name == "ops"  # from the cache
    prefix, _, secret = issued.token.rpartition("_")
    forged = f"{prefix}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    with pytest.raises(AdminCredentialError):
        authenticate(registry, forged)


def test_a_cached_token_stops_working_when_its_admin_row_changes(registry: Registry) -> None:
    issued = create_admin(registry, "ops", actor="test")
    assert authenticate(registry, issued.token).name == "ops"
    other = create_admin(registry, "other", actor="test")
    # Give "ops" the other admin's salt and hash, as a token rotation would: the cached
    # verification no longer matches the row, so the old token is checked again and fails.
    with registry._engine.begin() as connection:
        from sqlalchemy import text

        row = connection.execute(
            text("SELECT salt, token_hash FROM admins WHERE name = 'other'")
        ).one()
        connection.execute(
            text("UPDATE admins SET salt = :salt, token_hash = :hash WHERE name = 'ops'"),
            {"salt": row.salt, "hash": row.token_hash},
        )
    with pytest.raises(AdminCredentialError):
        authenticate(registry, issued.token)
    assert authenticate(registry, other.token).name == "other"
