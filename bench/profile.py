"""``python -m bench.profile``: where durably's W2 time goes, for whoever makes it faster.

Three views of the same W2 workload (runs of the three-step bench job):

1. the thread worker as W2 runs it, with the CPU time it burns per run
   (``time.process_time`` counts every thread of the process);
2. the SQL it sends per run, grouped by statement shape, and the
   transactions per run: on SQLite as the driver runs it (``sqlite3``'s trace
   callback, which also sees the statements durably hands to the driver
   directly); on PostgreSQL as SQLAlchemy sends it (its cursor and
   transaction events), on a throwaway server (:mod:`bench.postgres`);
3. ``cProfile`` of the same path run inline by ``process_until_idle()``:
   cProfile sees one thread only, and the inline path is the worker's
   claim / execute / persist / complete without the hand-offs between threads.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from durably import Durably

from . import postgres
from .apps import DRIVERS, JOB, SERVER_DRIVERS, AppConfig, build, inputs


def _fresh(directory: Path, driver: str, runs: int) -> Durably:
    durably = _migrated(directory, driver)
    _queue(durably, runs)
    return durably


def _migrated(directory: Path, driver: str) -> Durably:
    if driver in SERVER_DRIVERS:
        url = postgres.SERVER.database()
    else:
        url = DRIVERS[driver].format(path=directory / "durably.db")
    durably = build(AppConfig(url))
    durably.migrate()
    return durably


def _queue(durably: Durably, runs: int) -> None:
    job = durably.get_job(JOB)
    assert job is not None
    job.batch_trigger(inputs(runs))


def _shape(statement: str) -> str:
    """``UPDATE durably_runs SET status=?, ...`` -> ``UPDATE durably_runs SET status``."""
    words = re.sub(r"'[^']*'|\b\d+\b", "?", re.sub(r"\s+", " ", statement)).strip()
    words = re.sub(r"\(.*", "", words) if words.startswith("INSERT") else words
    return " ".join(words.split(" ")[:4]).rstrip(",=?")


class StatementCounter:
    """Counts statements by shape on an engine (all threads, all connections).

    Make it before durably's first write: the connection write batches
    share stays checked out of the pool, so a pool emptied afterwards would
    not reach it, and its statements would go uncounted.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.shapes: Counter[str] = Counter()
        self._lock = threading.Lock()
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", self._trace)
            engine.dispose()  # so that every connection from now on is traced
        else:  # a server's driver has no trace callback: what SQLAlchemy sends it
            sa.event.listen(engine, "before_cursor_execute", self._cursor_execute)
            sa.event.listen(engine, "begin", lambda _conn: self._count("BEGIN"))
            sa.event.listen(engine, "commit", lambda _conn: self._count("COMMIT"))

    def reset(self) -> None:
        with self._lock:
            self.shapes.clear()

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        trace = getattr(dbapi_connection, "set_trace_callback", None)
        if trace is None:
            raise SystemExit("statement counts need the sqlite3 driver (--driver sqlite)")
        trace(self._count)

    def _cursor_execute(self, *args: Any) -> None:
        self._count(args[2])  # (conn, cursor, statement, parameters, context, executemany)

    def _count(self, statement: str) -> None:
        with self._lock:
            self.shapes[_shape(statement)] += 1

    def report(self, runs: int) -> str:
        total = sum(self.shapes.values())
        begins = sum(n for shape, n in self.shapes.items() if shape.startswith("BEGIN"))
        lines = [
            f"{total / runs:.2f} statements and {begins / runs:.2f} transactions per run",
            "per run  statement",
        ]
        lines += [f"{n / runs:7.2f}  {shape}" for shape, n in self.shapes.most_common()]
        return "\n".join(lines)


def threaded(driver: str, runs: int) -> str:
    """W2 as measured by the bench, plus statements per run and CPU per run."""
    with tempfile.TemporaryDirectory() as scratch, _migrated(Path(scratch), driver) as durably:
        counter = StatementCounter(durably.engine)
        _queue(durably, runs)
        counter.reset()
        done = threading.Event()
        finished = Counter[str]()

        def on_complete(_event: object) -> None:
            finished["runs"] += 1
            if finished["runs"] >= runs:
                done.set()

        durably.on("run:complete", on_complete)
        cpu, wall = time.process_time(), time.perf_counter()
        durably.start()
        done.wait()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        durably.stop()
        head = (
            f"thread worker, 4 slots, {driver}: {runs / wall:,.0f} runs/s, "
            f"{cpu / runs * 1000:.2f} ms CPU per run ({cpu / wall:.0%} of one core)"
        )
        return head + "\n" + counter.report(runs)


def profiled(driver: str, runs: int, top: int, sort: str) -> str:
    """cProfile of ``process_until_idle()`` over ``runs`` runs: the top ``top`` functions."""
    with tempfile.TemporaryDirectory() as scratch, _fresh(Path(scratch), driver, runs) as durably:
        profiler = cProfile.Profile()
        profiler.enable()
        durably.process_until_idle()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--driver", choices=sorted((*DRIVERS, *SERVER_DRIVERS)), default="sqlite")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", help="a pstats sort key (tottime...)")
    args = parser.parse_args(argv)
    with postgres.serving((args.driver,), None):
        print(threaded(args.driver, args.runs))
        print()
        print(profiled(args.driver, args.runs, args.top, args.sort))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
