"""Admin tokens: scrypt-checked, remembered only while valid, revocable and rotatable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.cloud.admin import (
    AdminCredentialError,
    authenticate,
    create_admin,
    forget_verified_tokens,
    kdf_runs,
    revoke_admin,
    rotate_admin,
)
from tether.cloud.registry import AdminNotFoundError, AdminStateError, AdminStatus, Registry


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


def test_an_unknown_token_id_is_refused_without_running_scrypt(registry: Registry) -> None:
    create_admin(registry, "ops", actor="test")
    before = kdf_runs()
    for n in range(50):
        with pytest.raises(AdminCredentialError):
            authenticate(registry, f"tether_{n:016x}_{'A' * 43}")
    assert kdf_runs() == before


def test_a_wrong_secret_for_a_known_id_runs_scrypt_every_time(registry: Registry) -> None:
    issued = create_admin(registry, "ops", actor="test")
    token_id = issued.token.split("_")[1]
    before = kdf_runs()
    for _ in range(3):
        with pytest.raises(AdminCredentialError):
            authenticate(registry, f"tether_{token_id}_{'B' * 43}")
    assert kdf_runs() == before + 3


def test_rotation_refuses_the_old_token_at_once_even_when_cached(registry: Registry) -> None:
    issued = create_admin(registry, "ops", actor="test")
    create_admin(registry, "other", actor="test")
    assert authenticate(registry, issued.token).name == "ops"  # now cached
    rotated = rotate_admin(registry, "ops", actor="test:rotate")
    assert rotated.token != issued.token
    with pytest.raises(AdminCredentialError):
        authenticate(registry, issued.token)
    assert authenticate(registry, rotated.token).name == "ops"
    entry = registry.list_audit(target="ops").items[0]
    assert (entry.action, entry.actor) == ("admin.rotate", "test:rotate")
    assert rotated.token.split("_", 2)[2] not in str(entry.details)


def test_revocation_refuses_the_token_at_once_and_is_final(registry: Registry) -> None:
    issued = create_admin(registry, "ops", actor="test")
    create_admin(registry, "other", actor="test")
    assert authenticate(registry, issued.token).name == "ops"  # now cached
    before = kdf_runs()
    record = revoke_admin(registry, "ops", actor="test:revoke")
    assert record.status is AdminStatus.REVOKED and record.revoked_at is not None
    with pytest.raises(AdminCredentialError):
        authenticate(registry, issued.token)
    assert kdf_runs() == before  # a revoked id is refused like an unknown one
    entry = registry.list_audit(target="ops").items[0]
    assert (entry.action, entry.actor) == ("admin.revoke", "test:revoke")
    last = registry.last_audit_id()
    with pytest.raises(AdminStateError):
        revoke_admin(registry, "ops", actor="test")
    with pytest.raises(AdminStateError):
        rotate_admin(registry, "ops", actor="test")
    with pytest.raises(AdminNotFoundError):
        revoke_admin(registry, "nobody", actor="test")
    assert registry.last_audit_id() == last
    assert [(a.name, a.status) for a in registry.list_admins()] == [
        ("ops", AdminStatus.REVOKED),
        ("other", AdminStatus.ACTIVE),
    ]


def test_the_last_active_admin_cannot_be_revoked(registry: Registry) -> None:
    issued = create_admin(registry, "ops", actor="test")
    last = registry.last_audit_id()
    with pytest.raises(AdminStateError, match="last active admin"):
        revoke_admin(registry, "ops", actor="test")
    assert registry.last_audit_id() == last
    assert authenticate(registry, issued.token).name == "ops"


def test_admins_of_a_0002_registry_become_active_on_upgrade(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from tether.cloud.registry.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            text(
                "INSERT INTO admins (name, token_id, salt, token_hash, created_at) "
                "VALUES ('old', :id, :salt, :hash, '2026-01-01 00:00:00')"
            ),
            {"id": "0" * 16, "salt": b"s" * 16, "hash": b"h" * 32},
        )
    engine.dispose()
    with Registry.open(url) as upgraded:
        (old,) = upgraded.list_admins()
        assert (old.name, old.status, old.revoked_at) == ("old", AdminStatus.ACTIVE, None)
        assert upgraded.find_admin("0" * 16) is not None
