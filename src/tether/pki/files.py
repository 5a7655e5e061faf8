"""Reading certificate and CSR files with the input size limit applied before parsing."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from tether.pki.errors import InputFileNotFoundError, InputTooLargeError, UnknownReasonError
from tether.pki.loading import MAX_INPUT_BYTES

# RFC 5280 reason codes an operator may give; removeFromCRL is a delta-CRL mechanic.
REVOCATION_REASONS = tuple(
    r.name for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)


def read_input_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``, at most ``MAX_INPUT_BYTES`` (``InputTooLargeError`` beyond)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise InputFileNotFoundError(f"the {what} file {path} does not exist") from None
    except OSError as exc:
        raise InputFileNotFoundError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise InputTooLargeError(
            f"the {what} file {path} is larger than {MAX_INPUT_BYTES} bytes (64 KiB); "
            "a certificate or CSR is never that large"
        )
    return data


def parse_reason(value: str | None) -> x509.ReasonFlags | None:
    """The ``ReasonFlags`` named ``value`` (e.g. "key_compromise"); None stays None."""
    if value is None:
        return None
    normalised = value.strip().replace("-", "_")
    if normalised not in REVOCATION_REASONS:
        raise UnknownReasonError(
            f"unknown revocation reason {value!r}; use one of: {', '.join(REVOCATION_REASONS)}"
        )
    return x509.ReasonFlags[normalised]
