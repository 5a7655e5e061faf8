"""Admin credentials for the API: random bearer tokens, stored only as salted scrypt hashes.

A token looks like ``tether_<token id>_<secret>``. The token id (16 hex digits, stored in
clear) finds the administrator without hashing against every row; the secret (32 random
bytes, URL-safe base64) is checked with ``hashlib.scrypt`` and a constant-time compare. The
token is shown once, when it is made (``tether cloud init`` makes "admin", ``tether cloud
admin add NAME`` makes more); the registry keeps only the salt and the hash, so a copy of
the database does not let anyone call the API.

Every API request carries the token, and scrypt costs tens of milliseconds of CPU by design:
checked on every request it held CSR issuance through the API to ~40/s on two cores
(``bench/issuance.py``; ~137/s with this cache).
So a *successful* check is remembered, per process, in a small bounded cache
(``_VerifiedTokens``). Why that is safe:

- The cache key is HMAC-SHA256 of the whole presented token under a random key that exists
  only in this process's memory. The token itself is not kept, the key is never stored, and
  an attacker cannot choose tokens that collide in the dict (no hash flooding, no partial-match
  timing): only the exact, complete token finds an entry.
- The value is the (salt, hash) pair the token was verified against. Every request still
  reads the administrator by token id from the registry and accepts a cache hit only if the
  stored salt and hash are still exactly those (constant-time compare). Re-running scrypt
  against an unchanged (salt, hash) would give the same answer, so a hit decides exactly what
  the full check would. Invalidation is therefore immediate and needs no TTL: removing the
  administrator or giving it a new token (new salt and hash) makes the next request miss.
- Failures are never cached: a wrong secret, an unknown token id or a malformed token costs
  the full scrypt work every time, as before, so guessing is exactly as slow as it was, and a
  hit is only possible for someone who already holds the valid token. A memory dump holds
  digests and their key together, but a 256-bit secret cannot be searched for either way.
- Bounded (``_CACHE_ENTRIES``, least recently used evicted), so it cannot grow with traffic.
  ``forget_verified_tokens`` empties it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from tether.cloud.registry import AdminRecord, Registry
from tether.errors import AuthenticationError

TOKEN_PREFIX = "tether"  # noqa: S105  (a label, not a secret)
_TOKEN_RE = re.compile(r"tether_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# scrypt cost: 16 MiB and tens of milliseconds per check. The secret has 256 bits of entropy,
# so this is belt and braces against a stolen database, not the only protection.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _HASH_BYTES = 2**14, 8, 1, 32
_CACHE_ENTRIES = 256  # verified tokens remembered per process (administrators are few)


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


class _VerifiedTokens:
    """Tokens that passed the scrypt check in this process: keyed digest -> (salt, hash).

    See the module docstring for why this is safe. Thread-safe: the API checks tokens in
    worker threads.
    """

    def __init__(self, entries: int) -> None:
        self._key = secrets.token_bytes(32)  # in memory only; a new process starts empty
        self._entries = entries
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode("ascii"), hashlib.sha256).digest()

    def confirms(self, token: str, admin: AdminRecord) -> bool:
        """True if ``token`` was verified against exactly ``admin``'s current salt and hash."""
        digest = self._digest(token)
        with self._lock:
            known = self._verified.get(digest)
            if known is not None:
                self._verified.move_to_end(digest)
        if known is None:
            return False
        salt, token_hash = known
        same_salt = hmac.compare_digest(salt, admin.salt)
        return hmac.compare_digest(token_hash, admin.token_hash) and same_salt

    def remember(self, token: str, admin: AdminRecord) -> None:
        """Record a token that just passed the full check against ``admin``'s salt and hash."""
        digest = self._digest(token)
        with self._lock:
            self._verified[digest] = (admin.salt, admin.token_hash)
            self._verified.move_to_end(digest)
            while len(self._verified) > self._entries:
                self._verified.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._verified.clear()


_verified_tokens = _VerifiedTokens(_CACHE_ENTRIES)


def forget_verified_tokens() -> None:
    """Empty this process's cache of verified tokens (the next check of each runs scrypt)."""
    _verified_tokens.clear()


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
    part was wrong. A token this process already verified against the administrator's
    current salt and hash skips scrypt (see the module docstring); everything else pays it.
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
    if _verified_tokens.confirms(token, admin):
        return admin
    if not hmac.compare_digest(_hash(secret, admin.salt), admin.token_hash):
        raise refused
    _verified_tokens.remember(token, admin)
    return admin
