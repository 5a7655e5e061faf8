"""What every benchmark shares: figures over repeated runs, targets, JSON, the command line.

A benchmark module has ``run(work: Path, repeats: int) -> Result`` and ends with
``if __name__ == "__main__": main(run)``. A ``Figure`` holds one value per repeat and reports the
median and the spread (min..max, and max-min as a share of the median); a ``Target`` compares a
measured median with the issue's goal and says whether it was met. Nothing here judges speed
in the test suite: the numbers go to JSON and to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TETHER = Path(sys.executable).with_name("tether")


@dataclass
class Figure:
    """One measured quantity, one value per repeat."""

    key: str
    label: str
    unit: str
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def summary(self) -> dict[str, object]:
        low, high = (min(self.runs), max(self.runs)) if self.runs else (0.0, 0.0)
        median = self.median
        spread = (high - low) / median * 100 if self.runs and median else 0.0
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "median": median,
            "min": low,
            "max": high,
            "spread_pct": spread,
            "runs": self.runs,
        }


@dataclass
class Target:
    """The issue's goal for one figure or ratio, and whether this run met it."""

    label: str
    measured: float
    unit: str
    goal: str
    met: bool


@dataclass
class Result:
    """A benchmark's figures, targets and notes (what was measured how, what limited it)."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figure(self, key: str, label: str, unit: str) -> Figure:
        found = next((f for f in self.figures if f.key == key), None)
        if found is None:
            found = Figure(key, label, unit)
            self.figures.append(found)
        return found

    def __getitem__(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)

    def target(self, label: str, measured: float, unit: str, goal: str, met: bool) -> None:
        self.targets.append(Target(label, measured, unit, goal, met))

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 1),
            "figures": [f.summary() for f in self.figures],
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` (0..1) percentile by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (not its children) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> set[int]:
    """A process and its live descendants (parent links in /proc/*/stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every live descendant (workers, nats-server, the API).

    Descendants are found at the time of the call (:func:`process_tree`), so call it on a
    tree that does not change between two readings.
    """
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def process(
    command: Sequence[str], *, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server for the length of a ``with`` block; SIGTERM, then SIGKILL, at the end."""
    with log.open("ab") as sink:
        child = subprocess.Popen(
            list(command), stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=log.parent
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


def wait_for_port(
    port: int, *, timeout: float = 30.0, child: subprocess.Popen | None = None
) -> None:
    """Block until something accepts TCP connections on loopback ``port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"server exited with {child.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def main(run: Callable[[Path, int], Result], *, default_repeats: int = 3) -> None:
    """Command line of a single benchmark: ``python -m bench.<name> [--repeats N] [--json F]``."""
    parser = argparse.ArgumentParser(description=run.__module__)
    parser.add_argument("--repeats", type=int, default=default_repeats)
    parser.add_argument("--json", type=Path, help="write the result here (else stdout only)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    result = run_one(run, args.repeats, keep=args.keep)
    text = json.dumps(result.to_json(), indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


def run_one(
    run: Callable[[Path, int], Result], repeats: int, *, keep: Path | None = None
) -> Result:
    """Run one benchmark in a fresh work directory (removed afterwards unless ``keep``)."""
    work = keep or Path(tempfile.mkdtemp(prefix="tether-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        result = run(work, repeats)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def profile(pid: int, seconds: float, out: Path, *, top: int = 12) -> list[str]:
    """Sample a running Python process with py-spy; the hottest frames, as note lines.

    Returns "<share>% <function> (<file>:<line>)" for the frames where most samples were
    spent (self time), then for the Tether functions that include most samples. py-spy comes
    with the ``bench`` extra; without it the note says so instead of guessing.
    """
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return ["(no profile: py-spy is not installed; pip install -e '.[bench]')"]
    subprocess.run(
        [str(spy), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-f", "raw",
         "-o", str(out), "--nonblocking"],
        capture_output=True, check=False, timeout=seconds + 30,
    )  # fmt: skip
    if not out.exists():
        return ["(no profile: py-spy could not attach; it needs ptrace rights)"]
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("(concurrent/futures/thread.py:8" in f or "(threading.py" in f for f in frames[-1:]):
            continue  # an idle thread waiting for work
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            if "tether/" in frame:
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
    if not total:
        return ["(no profile: no samples)"]

    def lines(table: dict[str, int], what: str) -> list[str]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [f"{100 * n / total:5.1f}% {what} {frame}" for frame, n in ranked]

    return lines(own, "self") + lines(inclusive, "incl")
