"""The PostgreSQL floor: W1 and W2 written directly on psycopg 3, as bench/floor.py on sqlite3.

The same queue with the same guarantees and nothing else: a claim is one
``UPDATE ... RETURNING`` of the oldest pending run (or expired lease) taken
``FOR UPDATE SKIP LOCKED``, so claimers never wait on each other, and bumps
the fencing token; each step result is its own transaction, written only
while the lease is still ours and at most once per name; completion is one
fenced transaction that also drops the step rows. Four threads, each with
its own connection, as durably's four slots have.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .floor import COUNT_COMPLETED, LEASE_MS, STEPS, drain
from .postgres import connect

SCHEMA = (
    """
    CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        lease_generation INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
    )""",
    "CREATE INDEX runs_status ON runs (status, id)",
    "CREATE INDEX runs_status_lease ON runs (status, lease_expires_at)",
    """
    CREATE TABLE steps (
        run_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        output TEXT,
        lease_generation INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    )""",
)

CLAIM = """
UPDATE runs
SET status = 'leased', lease_owner = %(owner)s, lease_expires_at = %(expires)s,
    lease_generation = lease_generation + 1
WHERE id = (
    SELECT id FROM runs
    WHERE status = 'pending' OR (status = 'leased' AND lease_expires_at <= %(now)s)
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, input, lease_generation
"""
PERSIST_STEP = """
INSERT INTO steps (run_id, name, output, lease_generation)
SELECT %(run)s, %(name)s, %(output)s, %(gen)s
WHERE EXISTS (
    SELECT 1 FROM runs WHERE id = %(run)s AND status = 'leased' AND lease_generation = %(gen)s
)
"""
COMPLETE = """
UPDATE runs SET status = 'completed', output = %(output)s, lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = %(run)s AND status = 'leased' AND lease_generation = %(gen)s
"""
INSERT_RUN = "INSERT INTO runs (status, input, created_at) VALUES ('pending', %s, %s)"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def create(url: str) -> Any:
    """An autocommit connection to ``url``'s database, with the floor's tables in it."""
    conn = connect(url)
    with conn.transaction():
        for statement in SCHEMA:
            conn.execute(statement)
    return conn


def enqueue_single(url: str, count: int) -> float:
    """W1 single: ``count`` inserts, each its own transaction; returns triggers/s."""
    with create(url) as conn:
        started = time.perf_counter()
        for n in range(count):
            conn.execute(INSERT_RUN, (json.dumps({"n": n}), _now_ms()))
        return count / (time.perf_counter() - started)


def enqueue_batch(url: str, count: int) -> float:
    """W1 batch: ``count`` inserts in one transaction (psycopg pipelines them); triggers/s."""
    with create(url) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            now = _now_ms()
            cursor.executemany(INSERT_RUN, [(json.dumps({"n": n}), now) for n in range(count)])
        return count / (time.perf_counter() - started)


def _work(url: str, owner: str) -> None:
    """One worker thread: claim, three fenced step commits, a fenced completion; until empty."""
    with connect(url) as conn:
        while True:
            now = _now_ms()
            claimed = conn.execute(
                CLAIM, {"owner": owner, "expires": now + LEASE_MS, "now": now}
            ).fetchone()
            if claimed is None:
                return
            run_id, input_json, generation = claimed
            n = json.loads(input_json)["n"]
            for name in STEPS:
                output = json.dumps({"n": n, "step": name})  # the step's "work"
                cursor = conn.execute(
                    PERSIST_STEP, {"run": run_id, "name": name, "output": output, "gen": generation}
                )
                if cursor.rowcount != 1:
                    raise RuntimeError(f"lost the lease of run {run_id}")
            with conn.transaction():
                done = conn.execute(
                    COMPLETE, {"run": run_id, "gen": generation, "output": '{"ok": true}'}
                )
                if done.rowcount != 1:
                    raise RuntimeError(f"lost the lease of run {run_id}")
                conn.execute("DELETE FROM steps WHERE run_id = %s", (run_id,))


def end_to_end(url: str, runs: int, threads: int = 4) -> float:
    """W2: ``runs`` pending runs drained by ``threads`` workers; returns runs/s."""
    with create(url) as conn:
        with conn.transaction(), conn.cursor() as cursor:
            now = _now_ms()
            cursor.executemany(INSERT_RUN, [(json.dumps({"n": n}), now) for n in range(runs)])
        elapsed = drain(lambda owner: _work(url, owner), threads)
        row = conn.execute(COUNT_COMPLETED).fetchone()
    if row[0] != runs:
        raise RuntimeError(f"floor completed {row[0]} of {runs} runs")
    return runs / elapsed
