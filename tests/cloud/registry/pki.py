"""The registry tests' CAs: raw on purpose, from the shared builders in ``tests.pki_factory``.

The registry stores whatever chains to a registered CA, and these tests pin things
``tether.pki`` does not let a caller choose: a bare-CN CA subject (``record.subject ==
"CN=Test Device CA"``) and the certificate serial number (duplicate serial tests). For a
registry test with real Tether CAs see ``test_with_tether_pki.py``. Keys are made per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pki_factory import raw_ca, raw_leaf
from tether.pki import generate_key


@dataclass(frozen=True)
class LocalCA:
    """A CA certificate with its key, able to sign device certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, cn: str, *, issuer: LocalCA | None = None) -> LocalCA:
        """A CN-only CA: self-signed root when ``issuer`` is None, else an issuing CA under it."""
        cert, key = raw_ca(
            cn,
            issuer=issuer.cert if issuer else None,
            issuer_key=issuer.key if issuer else None,
            path_length=0 if issuer else None,
        )
        return cls(cert, key)

    def issue(self, serial: str, *, serial_number: int | None = None) -> x509.Certificate:
        """A device certificate for ``serial`` (subject CN = serial, clientAuth, fresh key)."""
        return raw_leaf(
            self.cert.subject,
            self.key,
            serial,
            generate_key().public_key(),
            serial_number=serial_number,
        )
