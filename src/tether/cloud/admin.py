"""Admin credentials for the API: random bearer tokens, stored only as salted scrypt hashes.

A token looks like ``tether_<token id>_<secret>``. The token id (16 hex digits, stored in
clear) finds the administrator without hashing against every row; the secret (32 random
bytes, URL-safe base64) is checked with ``hashlib.scrypt`` and a constant-time compare. The
token is shown once, when it is made (``tether cloud init`` makes "admin", ``tether cloud
admin add NAME`` makes more, ``rotate`` replaces one); the registry keeps only the salt and
the hash, so a copy of the database does not let anyone call the API.

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
  the full check would. Invalidation is therefore immediate and needs no TTL: revoking the
  administrator or rotating its token (new id, salt and hash) makes the next request miss.
- Failures are never cached: a wrong secret for a known token id costs the full scrypt work
  every time, so guessing is exactly as slow as it was, and a hit is only possible for someone
  who already holds the valid token. A memory dump holds digests and their key together, but
  a 256-bit secret cannot be searched for either way.
- Bounded (``_CACHE_ENTRIES``, least recently used evicted), so it cannot grow with traffic.
  ``forget_verified_tokens`` empties it.

An **unknown token id is refused without running scrypt.** The seed spent a dummy scrypt on
it so that timing would not reveal which ids exist; that turned every random well-formed token
into 16 MiB and tens of milliseconds of CPU for free (issue 14: 200 connections of them
starved the gateway). Revealing whether an id exists is acceptable: the id is 64 random bits
that only ever travel inside the token, so an outsider cannot find a valid one by probing
(2**64 guesses), and knowing one gains nothing without its 256-bit secret, which is still
checked with scrypt and a constant-time compare. A revoked administrator's id is not found
either (``Registry.find_admin`` returns active administrators only), so revocation and rotation
act at the next request in every process, with no KDF spent on a dead token.

The pieces (``parse_token``, ``find_candidate``, ``confirmed_by_cache``, ``verify_secret``) are
separate so the API can run the cheap steps first and put only the KDF behind its own bounded
lane and per-address limits (``tether.cloud.api.guard``); ``authenticate`` composes them for
synchronous callers. ``kdf_runs`` counts scrypt checks (the limits report and the tests read it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from tether.cloud.registry import AdminRecord, AdminStatus, Registry
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
    """An administrator's new token (made or rotated): the only time it exists outside its
    owner."""

    name: str
    token: str


def _hash(secret: str, salt: bytes) -> bytes:
    _kdf_counter.add()
    return hashlib.scrypt(
        secret.encode("ascii"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES
    )


@dataclass(frozen=True)
class PresentedToken:
    """A well-formed bearer token split into its parts (``repr`` never shows the secret)."""

    token: str = field(repr=False)
    token_id: str
    secret: str = field(repr=False)


class _KdfCounter:
    """How many scrypt token checks this process ran (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0

    def add(self) -> None:
        with self._lock:
            self._runs += 1

    @property
    def runs(self) -> int:
        with self._lock:
            return self._runs


_kdf_counter = _KdfCounter()


def kdf_runs() -> int:
    """How many scrypt token checks this process has run so far."""
    return _kdf_counter.runs


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

    def knows(self, token: str) -> bool:
        """True if ``token`` passed a full check in this process (against some salt and hash).

        Cheap (one HMAC, no database): lets a caller tell a token it has verified before from
        one that would need the KDF, before it reads anything.
        """
        digest = self._digest(token)
        with self._lock:
            return digest in self._verified

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


def _new_credential() -> tuple[str, str, bytes, bytes]:
    """A fresh token id, secret, salt and the secret's scrypt hash."""
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return secrets.token_hex(8), secret, salt, _hash(secret, salt)


def create_admin(registry: Registry, name: str, *, actor: str) -> IssuedAdminToken:
    """Make an administrator ``name`` with a fresh token; stores only the hash (audited).

    Raises InvalidRegistryInputError for a bad name and AdminExistsError for a taken one.
    """
    token_id, secret, salt, token_hash = _new_credential()
    registry.add_admin(name, token_id=token_id, salt=salt, token_hash=token_hash, actor=actor)
    return IssuedAdminToken(name=name, token=f"{TOKEN_PREFIX}_{token_id}_{secret}")


def rotate_admin(registry: Registry, name: str, *, actor: str) -> IssuedAdminToken:
    """Give ``name`` a new token (new id, salt and hash); the old token is refused at once.

    Every process refuses the old token at its next request: its id no longer finds the row,
    so no cache entry can vouch for it. AdminNotFoundError, AdminStateError when revoked.
    """
    token_id, secret, salt, token_hash = _new_credential()
    registry.rotate_admin(name, token_id=token_id, salt=salt, token_hash=token_hash, actor=actor)
    return IssuedAdminToken(name=name, token=f"{TOKEN_PREFIX}_{token_id}_{secret}")


def revoke_admin(registry: Registry, name: str, *, actor: str) -> AdminRecord:
    """Revoke ``name`` for good (refused at the next request everywhere); audited.

    AdminStateError for the last active administrator (see ``Registry.revoke_admin``).
    """
    return registry.revoke_admin(name, actor=actor)


def _refused() -> AdminCredentialError:
    return AdminCredentialError(
        "The admin credential is missing or not valid; send `Authorization: Bearer <token>` "
        "with a token from `tether cloud init` or `tether cloud admin add`."
    )


def parse_token(token: str) -> PresentedToken:
    """Split a bearer token into id and secret; AdminCredentialError if it is not one."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise _refused()
    token_id, secret = match.groups()
    return PresentedToken(token=token, token_id=token_id, secret=secret)


def was_verified(presented: PresentedToken) -> bool:
    """True if this process verified exactly this token before (no database, no KDF)."""
    return _verified_tokens.knows(presented.token)


def find_candidate(registry: Registry, presented: PresentedToken) -> AdminRecord:
    """The active administrator the token's id names; refused (no KDF) for any other id."""
    admin = registry.find_admin(presented.token_id)
    if admin is None or admin.status is not AdminStatus.ACTIVE:
        raise _refused()
    return admin


def confirmed_by_cache(presented: PresentedToken, admin: AdminRecord) -> bool:
    """True if this token was verified against ``admin``'s current salt and hash."""
    return _verified_tokens.confirms(presented.token, admin)


def verify_secret(presented: PresentedToken, admin: AdminRecord) -> AdminRecord:
    """The full check: scrypt the secret with ``admin``'s salt, compare in constant time.

    Costs ~16 MiB and tens of milliseconds: callers on a server run it on a bounded lane.
    Remembers a success (see the module docstring); AdminCredentialError otherwise.
    """
    if not hmac.compare_digest(_hash(presented.secret, admin.salt), admin.token_hash):
        raise _refused()
    _verified_tokens.remember(presented.token, admin)
    return admin


def authenticate(registry: Registry, token: str) -> AdminRecord:
    """The administrator this bearer token belongs to; AdminCredentialError otherwise.

    The same error (and message) for every failure, so a caller learns nothing about which
    part of a token with a known id was wrong. An unknown (or revoked) id is refused without
    the KDF; a token this process already verified against the administrator's current salt
    and hash skips it too (see the module docstring); a known id with any other secret pays it.
    """
    presented = parse_token(token)
    admin = find_candidate(registry, presented)
    if confirmed_by_cache(presented, admin):
        return admin
    return verify_secret(presented, admin)
