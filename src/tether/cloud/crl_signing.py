"""The CRL of the online issuing CA, which the cloud signs itself: fresh, and re-signed in time.

The cloud holds one CA key (the online device CA, ``api.device_ca``), so that CA's CRL never
has to be signed and uploaded by hand: it is built from the registry's revocations. It is
signed once and served from memory until either the revocations change (a new entry, or a
different reason) or less than ``resign_before`` of its validity is left; then it is signed
again with a higher CRL number. Every fetch therefore gets a CRL that lists every revocation
the registry holds and is valid for at least ``resign_before`` more, with no timer that could
stop: re-signing happens on the path that serves the CRL. Public, unauthenticated fetches
cost one registry read and, at most once per change, one signature.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from tether.pki import IssuingCA, RevokedEntry

DEFAULT_VALIDITY = timedelta(days=7)
DEFAULT_RESIGN_BEFORE = timedelta(days=1)


class OnlineCrl:
    """The online CA's CRL, signed when its content changes or its expiry nears."""

    def __init__(
        self,
        ca: IssuingCA,
        *,
        validity: timedelta = DEFAULT_VALIDITY,
        resign_before: timedelta = DEFAULT_RESIGN_BEFORE,
    ) -> None:
        if resign_before >= validity:
            raise ValueError("a CRL must be re-signed before it expires: resign_before < validity")
        self.ca = ca
        self.validity = validity
        self.resign_before = resign_before
        self._lock = threading.Lock()
        self._cached: tuple[tuple[tuple[int, str], ...], datetime, bytes] | None = None
        self.signed = 0  # how many CRLs this process signed (tests, logs)
        self._last_number = 0  # the CRL number of the last CRL signed here

    def der(self, revoked: Sequence[RevokedEntry], *, now: datetime | None = None) -> bytes:
        """The DER CRL listing ``revoked``: the cached one if still current, else a new one."""
        now = now or datetime.now(UTC)
        content = tuple(
            sorted((e.serial_number, "" if e.reason is None else e.reason.name) for e in revoked)
        )
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == content and now < cached[1] - self.resign_before:
                return cached[2]
            # The issue time in ms (pki.authority), but strictly above the last one: two CRLs
            # signed within one millisecond must still carry increasing numbers (RFC 5280 5.2.3).
            number = max(time.time_ns() // 1_000_000, self._last_number + 1)
            self._last_number = number
            crl = self.ca.build_crl(revoked, next_update=self.validity, crl_number=number)
            der = crl.public_bytes(Encoding.DER)
            next_update = crl.next_update_utc
            assert next_update is not None  # build_crl always sets it
            self._cached = (content, next_update, der)
            self.signed += 1
            return der
