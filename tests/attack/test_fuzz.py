"""Fuzzing the inputs that come from outside: CSRs, certificates for lint, MQTT bytes.

Each property: no crash (only ``TetherError`` subclasses escape), no hang (pytest-timeout),
bounded memory (tracemalloc peak per example under a stated bound; it sees Python allocations,
not OpenSSL's or the Rust codec's). ``derandomize=True`` makes the examples, and so the report
rows, the same on every run; ``max_examples`` keeps CI fast.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import mqtt5
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attack.report import SecurityReport
from tether.cloud.gateway.framing import PacketFramer, decode
from tether.errors import TetherError
from tether.pki import IssuingCA, Role, RootCA, lint, load_certificate, load_csr

MAX_EXAMPLES = 150
MAX_PACKET = 64 * 1024
MEMORY_BOUND = 4 * 1024 * 1024  # bytes of Python heap per example
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class Tally:
    """What the examples of one property did: error codes seen, accepted inputs, peak heap."""

    codes: set[str] = field(default_factory=set)
    accepted: int = 0
    examples: int = 0
    peak: int = 0

    def run(self, action: Callable[[], object]) -> None:
        """Run one example under tracemalloc; only a ``TetherError`` may escape ``action``."""
        self.examples += 1
        tracemalloc.start()
        try:
            action()
            self.accepted += 1
        except TetherError as exc:
            self.codes.add(exc.code)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        self.peak = max(self.peak, peak)
        assert peak < MEMORY_BOUND, f"{peak} bytes of heap for one example"

    def observation(self) -> str:
        codes = ", ".join(f"`{c}`" for c in sorted(self.codes)) or "none"
        return (
            f"{self.examples} examples: {self.accepted} accepted, the rest refused with "
            f"{codes}; no other exception; heap peak under {MEMORY_BOUND // 1024 // 1024} MiB"
        )


@pytest.fixture(scope="module")
def device_ca() -> IssuingCA:
    return RootCA.generate(common_name="Fuzz Root").create_issuing_ca(
        common_name="Fuzz Device CA", role=Role.DEVICE
    )


@pytest.fixture(scope="module")
def seeds(device_ca: IssuingCA) -> Iterator[dict[str, bytes]]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FUZZ-1")]))
        .sign(key, hashes.SHA256())
    )
    cert = device_ca.issue_device_certificate_for_key(key.public_key(), "FUZZ-1")
    yield {
        "csr": csr.public_bytes(serialization.Encoding.DER),
        "cert": cert.public_bytes(serialization.Encoding.DER),
    }


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few flips, cuts, insertions or a splice: mostly almost-valid DER."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[:at] if draw(st.booleans()) else data[:at] + data[at + 1 :]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at : at + draw(st.integers(1, 8))] = draw(st.binary(max_size=300))
    return bytes(data)


TALLIES: dict[str, Tally] = {}


def _tally(name: str) -> Tally:
    return TALLIES.setdefault(name, Tally())


@pytest.mark.timeout(120)
def test_csr_intake_only_raises_tether_errors(
    seeds: dict[str, bytes], device_ca: IssuingCA, security_report: SecurityReport
) -> None:
    tally = _tally("csr")

    @FUZZ
    @given(data=st.one_of(mutated(seeds["csr"]), st.binary(max_size=600)))
    def examples(data: bytes) -> None:
        def intake() -> None:
            certificate = device_ca.issue_device_certificate(load_csr(data), "FUZZ-1")
            # Whatever got through is a proper Tether device certificate.
            assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
            assert certificate.subject.rfc4514_string() == "CN=FUZZ-1"

        tally.run(intake)

    examples()
    security_report.record(
        "fuzz",
        "fuzz-csr-intake",
        "mutated / random CSR DER into `load_csr` + `IssuingCA.issue_device_certificate`: "
        "only TetherError, no hang, bounded heap",
        tally.observation(),
        passed=True,
    )
    assert tally.codes, "no example was refused: the mutations did not reach the parser"


@pytest.mark.timeout(120)
def test_lint_never_crashes_on_mutated_certificates(
    seeds: dict[str, bytes], device_ca: IssuingCA, security_report: SecurityReport
) -> None:
    tally = _tally("lint")

    @FUZZ
    @given(data=mutated(seeds["cert"]))
    def examples(data: bytes) -> None:
        def check() -> None:
            findings = lint(load_certificate(data), [device_ca.certificate])
            assert all(f.severity in {"error", "warning", "info"} for f in findings)

        tally.run(check)

    examples()
    security_report.record(
        "fuzz",
        "fuzz-certificate-lint",
        "mutated certificate DER into `load_certificate` + `lint`: lint never raises; "
        "loading raises only TetherError",
        tally.observation(),
        passed=True,
    )
    assert tally.accepted, "no mutated certificate loaded: lint itself was never exercised"


@pytest.mark.timeout(120)
def test_mqtt_framing_only_raises_tether_errors(security_report: SecurityReport) -> None:
    tally = _tally("mqtt")
    header = st.builds(
        lambda kind, body: bytes([kind, min(len(body), 127)]) + body,
        st.integers(0, 255),
        st.binary(max_size=127),
    )
    valid = st.sampled_from(
        [
            mqtt5.ConnectPacket("FUZZ-1", clean_start=True).write(),
            mqtt5.PublishPacket("devices/FUZZ-1/t", b"x", qos=mqtt5.QoS.AT_MOST_ONCE).write(),
            mqtt5.PingReqPacket().write(),
        ]
    )

    @FUZZ
    @given(
        chunks=st.lists(st.one_of(st.binary(min_size=1, max_size=512), header, valid), max_size=8)
    )
    def examples(chunks: list[bytes]) -> None:
        def frame() -> None:
            framer = PacketFramer(MAX_PACKET)
            for chunk in chunks:
                framer.feed(chunk)
                while framer.next_packet() is not None:
                    pass
                # The buffer never holds more than one partial packet plus the last chunk.
                assert framer.buffered < MAX_PACKET + len(chunk)
            for chunk in chunks:  # and each chunk alone as a whole frame
                with contextlib.suppress(TetherError):
                    decode(chunk)

        tally.run(frame)

    examples()
    security_report.record(
        "fuzz",
        "fuzz-mqtt-framing",
        "random / header-shaped / valid chunks into the gateway's `PacketFramer` and `decode`: "
        "only TetherError, buffer bounded by one packet",
        tally.observation(),
        passed=True,
    )
    assert tally.codes
