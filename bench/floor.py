"""The floor: W1 and W2 written directly on the stdlib ``sqlite3`` module.

This is the fastest *correct* job queue we know how to write on one SQLite
file, so every durably figure can be read as a fraction of it. It keeps the
guarantees durably makes and nothing else:

* a claim is one ``UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE`` that
  leases the oldest pending run (or an expired lease) and bumps the fencing
  token;
* each step result is its own transaction, written only while the lease is
  still ours (``INSERT ... SELECT ... WHERE EXISTS``) and at most once per name
  (primary key);
* completion is one fenced transaction that also drops the step rows.

It has no events, JSON validation, labels, idempotency or concurrency keys,
heartbeat thread, ORM layer or secondary indexes beyond the two the claim
needs: the gap between it and durably is what those cost.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    lease_generation INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_status_lease ON runs (status, lease_expires_at);
CREATE TABLE steps (
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    output TEXT,
    lease_generation INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

# FIFO over pending runs and expired leases; each arm is one index seek.
CLAIM = """
UPDATE runs
SET status = 'leased', lease_owner = :owner, lease_expires_at = :expires,
    lease_generation = lease_generation + 1
WHERE id = (
    SELECT min(id) FROM (
        SELECT * FROM (SELECT id FROM runs WHERE status = 'pending' ORDER BY id LIMIT 1)
        UNION ALL
        SELECT * FROM (
            SELECT id FROM runs WHERE status = 'leased' AND lease_expires_at <= :now
            ORDER BY id LIMIT 1
        )
    )
)
RETURNING id, input, lease_generation
"""
PERSIST_STEP = """
INSERT INTO steps (run_id, name, output, lease_generation)
SELECT :run, :name, :output, :gen
WHERE EXISTS (
    SELECT 1 FROM runs WHERE id = :run AND status = 'leased' AND lease_generation = :gen
)
"""
COMPLETE = """
UPDATE runs SET status = 'completed', output = :output, lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = :run AND status = 'leased' AND lease_generation = :gen
"""
INSERT_RUN = "INSERT INTO runs (status, input, created_at) VALUES ('pending', ?, ?)"
COUNT_COMPLETED = "SELECT count(*) FROM runs WHERE status = 'completed'"
LEASE_MS = 30_000
STEPS = ("a", "b", "c")


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """An autocommit connection: transactions are spelled out, as durably does."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def create(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = connect(path, synchronous)
    conn.executescript(SCHEMA)
    return conn


class Writer:
    """Serialises this process's write transactions on a Python lock.

    Without it, threads wait for SQLite's write lock in its busy handler,
    which sleeps and retries: unfair enough that under FULL a thread was
    starved past a 5 s busy timeout. durably queues its writers the same way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock up front, never upgraded."""
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def enqueue_single(path: Path, count: int, synchronous: str = "NORMAL") -> float:
    """W1 single: ``count`` inserts, each its own transaction; returns triggers/s."""
    conn = create(path, synchronous)
    writer = Writer()
    started = time.perf_counter()
    for n in range(count):
        with writer.transaction(conn):
            conn.execute(INSERT_RUN, (json.dumps({"n": n}), _now_ms()))
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def enqueue_batch(path: Path, count: int, synchronous: str = "NORMAL") -> float:
    """W1 batch: ``count`` inserts in one transaction; returns triggers/s."""
    conn = create(path, synchronous)
    started = time.perf_counter()
    with Writer().transaction(conn):
        now = _now_ms()
        conn.executemany(INSERT_RUN, ((json.dumps({"n": n}), now) for n in range(count)))
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def _work(path: Path, synchronous: str, writer: Writer, owner: str) -> None:
    """One worker thread: claim, three fenced step commits, a fenced completion; until empty."""
    conn = connect(path, synchronous)
    try:
        while True:
            now = _now_ms()
            with writer.transaction(conn):
                claimed = conn.execute(
                    CLAIM, {"owner": owner, "expires": now + LEASE_MS, "now": now}
                ).fetchone()
            if claimed is None:
                return
            run_id, input_json, generation = claimed
            n = json.loads(input_json)["n"]
            for name in STEPS:
                output = json.dumps({"n": n, "step": name})  # the step's "work"
                with writer.transaction(conn):
                    cursor = conn.execute(
                        PERSIST_STEP,
                        {"run": run_id, "name": name, "output": output, "gen": generation},
                    )
                if cursor.rowcount != 1:
                    raise RuntimeError(f"lost the lease of run {run_id}")
            with writer.transaction(conn):
                done = conn.execute(
                    COMPLETE, {"run": run_id, "gen": generation, "output": '{"ok": true}'}
                )
                if done.rowcount != 1:
                    raise RuntimeError(f"lost the lease of run {run_id}")
                conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
    finally:
        conn.close()


def end_to_end(path: Path, runs: int, threads: int = 4, synchronous: str = "NORMAL") -> float:
    """W2: ``runs`` pending runs drained by ``threads`` workers; returns runs/s."""
    conn = create(path, synchronous)
    writer = Writer()
    with writer.transaction(conn):
        now = _now_ms()
        conn.executemany(INSERT_RUN, ((json.dumps({"n": n}), now) for n in range(runs)))
    try:
        elapsed = drain(lambda owner: _work(path, synchronous, writer, owner), threads)
        completed = conn.execute(COUNT_COMPLETED).fetchone()[0]
    finally:
        conn.close()
    if completed != runs:
        raise RuntimeError(f"floor completed {completed} of {runs} runs")
    return runs / elapsed


def drain(work: Callable[[str], None], threads: int) -> float:
    """Run ``work(owner)`` on ``threads`` threads at once; the seconds until all have returned.

    Both floors (this one and bench/floor_postgresql.py) drain their queue
    this way, so their W2 figures time the same thing. A thread's exception
    is raised here once every thread has stopped, not lost with its thread.
    """
    failures: list[BaseException] = []

    def run(owner: str) -> None:
        try:
            work(owner)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(f"floor-{i}",)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return elapsed
