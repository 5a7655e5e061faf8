"""Run the benchmarks and publish them: ``python -m bench [NAME ...] [--repeats N]``.

With no names, every benchmark runs, in the order below. Each writes its figures (median and
spread over the repeats), its targets and its notes; the run's JSON goes to
``docs/benchmarks.json`` (merged: benchmarks not run this time keep their last result) and the
tables in ``docs/benchmarks.md`` between the ``results`` markers are rewritten from it, with
the machine and the versions measured on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, run_one

BENCHMARKS = (
    "connect",
    "issuance",
    "revocation",
    "abuse",
    "scale",
    "memory",
    "tokens",
    "policy",
    "enrollment",
    "workers",
    "cluster",
    "renewal",
    "messages",
)
JSON_PATH = REPO / "docs" / "benchmarks.json"
DOC_PATH = REPO / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    memory_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    os_release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    from bench.peers import mosquitto_version

    commit = _command("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    postgres = _command("/usr/lib/postgresql/15/bin/postgres", "--version")
    if postgres in ("?", "not installed"):
        postgres = _command("psql", "--version")
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "os": os_release.get("PRETTY_NAME", "?").strip('"') + f", Linux {platform.release()}",
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres,
        "mosquitto": mosquitto_version(),
        "tether": commit,
    }


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def render(data: dict) -> str:
    """The markdown between the markers: machine, then per benchmark its targets and figures."""
    info = data["machine"]
    out = [
        f"Last run {data['when']} (commit {info['tether']}). A benchmark not run that time keeps "
        "its earlier result: each heading says when, on which commit and with how many repeats "
        "it was measured; spread = (max - min) / median.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    out += [f"| {key} | {value} |" for key, value in info.items() if key != "tether"]
    for name in BENCHMARKS:
        result = data["results"].get(name)
        if result is None:
            continue
        measured = ", ".join(
            f"{label} {result[key]}"
            for key, label in (("when", "measured"), ("commit", "commit"), ("repeats", "repeats"))
            if key in result
        )
        out += [
            "",
            f"### {name} ({result['seconds']:.0f} s{'; ' + measured if measured else ''})",
            "",
        ]
        if result["targets"]:
            out += ["| target | measured | goal | met |", "|---|---|---|---|"]
            for target in result["targets"]:
                met = "yes" if target["met"] else "**no**"
                out.append(
                    f"| {target['label']} | {_number(target['measured'], target['unit'])} "
                    f"{target['unit']} | {target['goal']} | {met} |"
                )
            out.append("")
        out += ["| figure | median | min | max | spread |", "|---|---|---|---|---|"]
        for figure in result["figures"]:
            unit = figure["unit"]
            out.append(
                f"| {figure['label']} | {_number(figure['median'], unit)} {unit} | "
                f"{_number(figure['min'], unit)} | {_number(figure['max'], unit)} | "
                f"{figure['spread_pct']:.0f}% |"
            )
        if result["notes"]:
            out += ["", "<details><summary>notes</summary>", "", "```"]
            out += result["notes"]
            out += ["```", "", "</details>"]
    return "\n".join(out)


def publish(data: dict) -> None:
    """Write the merged JSON and rewrite the results section of docs/benchmarks.md."""
    JSON_PATH.write_text(json.dumps(data, indent=2) + "\n")
    text = DOC_PATH.read_text()
    if START not in text or END not in text:
        raise RuntimeError(f"{DOC_PATH} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC_PATH.write_text(f"{head}{START}\n{render(data)}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-publish", action="store_true", help="print JSON only")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    started = time.monotonic()
    data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {"results": {}}
    data["machine"] = machine()
    data["when"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data["repeats"] = args.repeats
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        result = run_one(module.run, args.repeats)
        data["results"][name] = {
            **result.to_json(),
            "when": data["when"],
            "commit": data["machine"]["tether"],
            "repeats": args.repeats,
        }
        for target in result.targets:
            verdict = "met" if target.met else "MISSED"
            print(f"   {target.label}: {target.measured:.3g} {target.unit} "
                  f"(goal {target.goal}) {verdict}", file=sys.stderr, flush=True)  # fmt: skip
        print(f"   {result.seconds:.0f} s", file=sys.stderr, flush=True)
        data["total_seconds"] = round(time.monotonic() - started, 1)
        if not args.no_publish:
            publish(data)  # after each one: a later benchmark that fails loses only itself
    print(f"== all done in {data['total_seconds']:.0f} s", file=sys.stderr)
    if args.no_publish:
        print(json.dumps(data, indent=2))
    else:
        print(f"wrote {JSON_PATH.relative_to(REPO)} and {DOC_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
