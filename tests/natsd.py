"""Throwaway nats-server nodes (Debian ``nats-server``) for the tests: one, or a cluster.

Built on the product's own :class:`~tether.cloud.bus.natsd.LocalNatsServer` (the server
``tether cloud serve --workers N`` supervises), so the tests run the config the product
writes. Nodes listen on loopback; a cluster's nodes route to each other.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tether.cloud.bus.natsd import LocalNatsServer, free_port


@contextmanager
def nats_cluster(directory: Path, nodes: int = 1) -> Iterator[list[LocalNatsServer]]:
    """Start ``nodes`` nats-server processes (routed together when more than one)."""
    cluster_ports = [free_port() for _ in range(nodes)]
    servers = [
        LocalNatsServer(
            directory,
            name=f"node{index}",
            cluster_port=cluster_ports[index] if nodes > 1 else None,
            routes=tuple(p for p in cluster_ports if p != cluster_ports[index]),
        )
        for index in range(nodes)
    ]
    try:
        for server in servers:
            server.start()
        if nodes > 1:
            _wait_routed(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _wait_routed(servers: list[LocalNatsServer], timeout: float = 10.0) -> None:
    """Wait until every node's log says a route is up (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [(s.directory / f"{s.name}.log").read_text(errors="replace") for s in servers]
        if all("Route connection created" in text for text in logs):
            return
        time.sleep(0.05)
    raise RuntimeError("nats-server nodes did not form a cluster in time")


def port_open(url: str) -> bool:
    """Whether a nats:// URL accepts TCP connections now."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False
