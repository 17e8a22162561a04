"""``python -m bench``: run the benchmark and print markdown (see docs/performance.md).

The table goes to stdout; progress, one line per measurement, to stderr, so
``python -m bench > results.md`` keeps a clean report.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import plan, postgres, report
from .apps import DRIVERS, SERVER_DRIVERS
from .targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions per case (default 3, 1 with --quick)"
    )
    parser.add_argument(
        "--only",
        default=",".join(plan.WORKLOADS),
        help=f"comma-separated workloads (default all: {','.join(plan.WORKLOADS)})",
    )
    parser.add_argument(
        "--drivers",
        default="sqlite,libsql",
        help="durably drivers to bench (postgresql: on a throwaway server the bench starts)",
    )
    parser.add_argument(
        "--cap", type=float, default=None, help="seconds after which a throughput workload stops"
    )
    parser.add_argument(
        "--memory-cap",
        type=float,
        default=None,
        help="seconds the memory workload may run (default 15; 300 runs all 20k runs)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the database files go (not a tmpfs)"
    )
    args = parser.parse_args(argv)
    for name, given, known in (
        ("--only", args.only, plan.WORKLOADS),
        ("--drivers", args.drivers, (*DRIVERS, *SERVER_DRIVERS)),
    ):
        unknown = sorted(set(given.split(",")) - set(known) - {""})
        if unknown:
            parser.error(f"{name}: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    options = plan.Options(
        sizes=plan.QUICK if args.quick else plan.FULL,
        workloads=tuple(w for w in args.only.split(",") if w),
        drivers=tuple(d for d in args.drivers.split(",") if d),
    ).with_caps(args.cap, args.memory_cap)
    cases = plan.build(options)
    results = {case.id: report.Result(case) for case in cases}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="durably-bench-", dir=args.dir) as scratch,
        postgres.serving(options.drivers, args.dir),
    ):
        root = Path(scratch)
        for repetition in range(args.repeat):
            for index, case in enumerate(cases):
                if case.skip or case.run is None:
                    continue
                if case.max_repeats is not None and repetition >= case.max_repeats:
                    continue
                _measure(case, results[case.id], root / f"{repetition}-{index}", repetition)
        elapsed = time.perf_counter() - started
        print(_header(options, args, root, elapsed))
    print(report.table(results.values()))
    print()
    print("## Targets\n")
    print(report.targets_table(TARGETS, results.values()))
    return 0


def _measure(case: report.Case, result: report.Result, directory: Path, repetition: int) -> None:
    """One repetition of one case in its own directory; a failure is recorded, not raised."""
    assert case.run is not None
    directory.mkdir()
    label = f"{case.workload} | {case.system} | {case.driver} | {case.setting}"
    began = time.perf_counter()
    try:
        outcome = case.run(directory)
    except Exception as exc:  # one broken case must not sink the whole report
        result.error = f"error: {type(exc).__name__}: {exc}"[:200]
        print(f"[rep {repetition + 1}] {label}: {result.error}", file=sys.stderr, flush=True)
        return
    result.add(outcome, repetition)
    figures = ", ".join(f"{k} {report.number(v)}" for k, v in outcome.values.items())
    took = time.perf_counter() - began
    print(f"[rep {repetition + 1}] {label}: {figures} ({took:.1f}s)", file=sys.stderr, flush=True)


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (a tmpfs would make FULL meaningless)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if (
                    len(fields) > 2
                    and str(path).startswith(fields[1])
                    and len(fields[1]) > len(best)
                ):
                    best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def _postgresql_line(options: plan.Options) -> list[str]:
    if postgres.DRIVER not in options.drivers or not postgres.SERVER.version:
        return []
    return [
        f"- PostgreSQL {postgres.SERVER.version} (server started by the bench, Unix socket, "
        "fsync on; sync NORMAL = synchronous_commit off, FULL = on), psycopg "
        f"{importlib.metadata.version('psycopg')}"
    ]


def _header(options: plan.Options, args: argparse.Namespace, root: Path, elapsed: float) -> str:
    sizes = options.sizes
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return "\n".join(
        [
            "# durably benchmark",
            "",
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; durably {_git_revision()}",
            f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs, load average {load}, database files on {_filesystem(root)}",
            f"- sizes: W1 {sizes.enqueue:,} triggers; W2 {sizes.runs:,} runs x 3 steps; "
            f"W3 {sizes.latency} runs; W4 {sizes.recovery_runs} runs; "
            f"W5 memory {sizes.memory_runs:,} runs; cap {sizes.cap:g}s per measurement",
            *_postgresql_line(options),
            f"- {args.repeat} repetition(s), interleaved; median and min-max; "
            "x floor = median of the per-repetition ratios to the floor; "
            f"took {elapsed / 60:.1f} min",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
