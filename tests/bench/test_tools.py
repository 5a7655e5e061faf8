"""The benchmark tooling works: the load generator, the peers and the report (not the speed).

Benchmarks are run by ``make bench``, never timed here; these tests only keep the tools from
rotting: the C load generator builds and completes real mutual-TLS MQTT connections against
both servers with zero errors, ``openssl speed`` is read, and the report renders.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from bench.__main__ import END, START, publish, render
from bench.common import Figure, Result
from bench.peers import (
    build_loadgen,
    build_tlsmin,
    handshake_crypto_limit,
    mosquitto_server,
    openssl_speed,
    run_loadgen,
    tether_server,
    tlsmin_server,
    worker_pids,
)
from bench.world import build_world

from bench import cluster, tokens
from tests.softhsm import Token


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    return build_world(tmp_path_factory.mktemp("bench-world"), identities=8)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_loadgen(tmp_path_factory.mktemp("bench-loadgen"))


@pytest.mark.parametrize("peer", [tether_server, mosquitto_server], ids=["tether", "mosquitto"])
def test_the_load_generator_completes_mutual_tls_mqtt_connections(world, loadgen, peer) -> None:
    with peer(world) as server:
        outcome = run_loadgen(loadgen, server.port, world.identities, threads=2, duration=1)
    assert outcome["errors"] == {"tcp": 0, "tls": 0, "mqtt": 0, "refused": 0}
    assert outcome["connections"] > 0
    assert 0 < outcome["latency_ms"]["p50"] <= outcome["latency_ms"]["p99"]


def test_the_gateway_refuses_the_load_generator_with_an_unregistered_identity(
    tmp_path: Path, world, loadgen
) -> None:
    stranger = build_world(tmp_path / "other", identities=1)  # another PKI entirely
    with tether_server(world) as server:
        outcome = run_loadgen(loadgen, server.port, stranger.identities, threads=1, duration=1)
    assert outcome["connections"] == 0
    assert outcome["errors"]["tls"] + outcome["errors"]["mqtt"] > 0


def test_the_minimal_tls_server_requires_a_client_certificate_of_the_world(
    tmp_path: Path, world, loadgen
) -> None:
    tlsmin = build_tlsmin(tmp_path)
    stranger = build_world(tmp_path / "other", identities=1)  # another PKI entirely
    with tlsmin_server(world, tlsmin) as server:
        accepted = run_loadgen(loadgen, server.port, world.identities, threads=2, duration=1)
        refused = run_loadgen(loadgen, server.port, stranger.identities, threads=1, duration=1)
    assert accepted["errors"] == {"tcp": 0, "tls": 0, "mqtt": 0, "refused": 0}
    assert accepted["connections"] > 0
    assert refused["connections"] == 0
    assert refused["errors"]["tls"] + refused["errors"]["mqtt"] > 0


def test_the_cluster_benchmark_finds_the_worker_holding_a_connection(world) -> None:
    with tether_server(world, workers=2, log_level="WARNING") as server:
        workers = worker_pids(server)
        assert len(workers) == 2
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            held_by = cluster._worker_of(sock.getsockname()[1], server.port, workers)
    assert held_by in workers


def test_the_crypto_limit_comes_from_openssl_speed() -> None:
    speed = openssl_speed(seconds=1)
    assert speed["sign"] > speed["verify"] > 0 and speed["ecdh"] > 0
    one = handshake_crypto_limit(speed, cores=1)
    assert handshake_crypto_limit(speed, cores=2) == pytest.approx(2 * one)
    assert one < speed["verify"] / 2  # two verifications per handshake at least


def test_the_report_renders_figures_targets_and_refuses_a_page_without_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = Result("connect", figures=[Figure("r", "rate", "/s", [100.0, 120.0, 110.0])])
    result.target("Tether / Mosquitto", 0.5, "x", ">= 1.5", False)
    data = {
        "when": "today",
        "repeats": 3,
        "machine": {"cpu": "test", "tether": "abc"},
        "results": {
            "connect": {**result.to_json(), "when": "today", "commit": "abc", "repeats": 3},
            "memory": Result("memory").to_json(),  # measured before runs carried these
        },
    }
    text = render(data)
    assert "### connect (0 s; measured today, commit abc, repeats 3)" in text
    assert "### memory (0 s)" in text
    assert "| rate | 110 /s | 100 | 120 | 18% |" in text
    assert "| Tether / Mosquitto | 0.50 x | >= 1.5 | **no** |" in text
    page = tmp_path / "benchmarks.md"
    monkeypatch.setattr("bench.__main__.DOC_PATH", page)
    monkeypatch.setattr("bench.__main__.JSON_PATH", tmp_path / "benchmarks.json")
    page.write_text(f"intro\n{START}\nold\n{END}\nafter\n")
    publish(data)
    written = page.read_text()
    assert written.startswith("intro\n") and written.endswith("after\n") and "old" not in written
    page.write_text("no markers")
    with pytest.raises(RuntimeError, match="markers"):
        publish(data)


@pytest.mark.tpm
def test_the_tokens_benchmark_measures_a_token(
    token: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.tokens' measurement provisions units and signs on SoftHSM2 and on the TPM."""
    monkeypatch.setattr("bench.tokens.SECONDS", 0.05)
    ca = tokens._factory_ca(tmp_path / "pki")
    factory_rate, sign_rate = tokens.measure(
        token.module, token.label, token.pin, ca, tmp_path / "made.jsonl"
    )
    assert factory_rate > 0 and sign_rate > 0
    assert (tmp_path / "made.jsonl").read_text().count("\n") >= 1
