"""Admin credentials for the API: random bearer tokens, stored only as salted scrypt hashes.

A token looks like ``tether_<token id>_<secret>``. The token id (16 hex digits, stored in
clear) finds the administrator without hashing against every row; the secret (32 random
bytes, URL-safe base64) is checked with ``hashlib.scrypt`` and a constant-time compare. The
token is shown once, when it is made (``tether cloud init`` makes "admin", ``tether cloud
admin add NAME`` makes more); the registry keeps only the salt and the hash, so a copy of
the database does not let anyone call the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from tether.cloud.registry import AdminRecord, Registry
from tether.errors import AuthenticationError

TOKEN_PREFIX = "tether"  # noqa: S105  (a label, not a secret)
_TOKEN_RE = re.compile(r"tether_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# scrypt cost: 16 MiB and tens of milliseconds per check. The secret has 256 bits of entropy,
# so this is belt and braces against a stolen database, not the only protection.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _HASH_BYTES = 2**14, 8, 1, 32


class AdminCredentialError(AuthenticationError):
    """A bearer token is missing, malformed, unknown or wrong."""

    code = "admin_credential_invalid"


@dataclass(frozen=True)
class IssuedAdminToken:
    """A new administrator and its token: the only time the token exists outside its owner."""

    name: str
    token: str


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode("ascii"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES
    )


def create_admin(registry: Registry, name: str, *, actor: str) -> IssuedAdminToken:
    """Make an administrator ``name`` with a fresh token; stores only the hash (audited).

    Raises InvalidRegistryInputError for a bad name and AdminExistsError for a taken one.
    """
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    registry.add_admin(
        name, token_id=token_id, salt=salt, token_hash=_hash(secret, salt), actor=actor
    )
    return IssuedAdminToken(name=name, token=f"{TOKEN_PREFIX}_{token_id}_{secret}")


def authenticate(registry: Registry, token: str) -> AdminRecord:
    """The administrator this bearer token belongs to; AdminCredentialError otherwise.

    The same error (and message) for every failure, so a caller learns nothing about which
    part was wrong.
    """
    match = _TOKEN_RE.fullmatch(token)
    refused = AdminCredentialError(
        "The admin credential is missing or not valid; send `Authorization: Bearer <token>` "
        "with a token from `tether cloud init` or `tether cloud admin add`."
    )
    if match is None:
        raise refused
    token_id, secret = match.groups()
    admin = registry.find_admin(token_id)
    if admin is None:
        # Spend the same work as a real check, so timing does not reveal known token ids.
        _hash(secret, b"\0" * 16)
        raise refused
    if not hmac.compare_digest(_hash(secret, admin.salt), admin.token_hash):
        raise refused
    return admin
