"""The one exception hierarchy of Tether.

Every error carries a stable, machine-readable ``code`` (the API maps codes to HTTP statuses,
scripts match on them) and a message written for the person who has to act on it. Components
define narrower subclasses next to their code, but always under one of the categories here, so
callers can catch at the level they care about: ``InvalidInputError`` for anything that came
from outside and was refused, ``AuthenticationError`` for a wrong passphrase or PIN, and so on.
"""

from __future__ import annotations

from typing import ClassVar


class TetherError(Exception):
    """Base of every error Tether raises on purpose.

    ``code`` is stable across releases; ``message`` says what went wrong and what to do.
    """

    code: ClassVar[str] = "tether_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance override of the class code

    def __str__(self) -> str:
        return self.message


class InvalidInputError(TetherError):
    """Input from outside (a file, a CSR, a packet, an argument) was refused; nothing changed."""

    code = "invalid_input"


class PolicyViolationError(InvalidInputError):
    """Well-formed input that breaks the Tether profile or policy (wrong curve, PII, ...)."""

    code = "policy_violation"


class AuthenticationError(TetherError):
    """A secret did not open what it should: wrong passphrase, wrong PIN, bad credential."""

    code = "authentication_failed"


class PermissionDeniedError(TetherError):
    """The caller is known but not allowed to do this."""

    code = "permission_denied"


class NotFoundError(TetherError):
    """A named thing (device, CA, token, file) does not exist."""

    code = "not_found"


class ConflictError(TetherError):
    """The thing already exists or is in a state that forbids the action."""

    code = "conflict"


class ConfigurationError(TetherError):
    """The set-up is wrong or incomplete (missing module, unreadable directory, bad setting)."""

    code = "configuration_error"


class SecureElementError(TetherError):
    """The secure element refused or failed an operation."""

    code = "secure_element_error"


class StorageError(TetherError):
    """The registry or a file store could not complete a read or write."""

    code = "storage_error"


class UsageError(InvalidInputError):
    """The command line itself is wrong (options that exclude each other, one missing).

    The CLI exits 2 for it, like a usage error Typer finds on its own; nothing was done.
    """

    code = "usage_error"
