"""Fill durably's tables with finished runs, fast, for W5's "does history slow it down?".

Written with the stdlib ``sqlite3`` module straight into the tables of
:mod:`durably.schema` (a libSQL file is an SQLite file), in one transaction:
100k runs take seconds instead of the minutes triggering and running them
would. The column lists come from the schema, so a new column cannot be
forgotten silently: a NOT NULL column without a value here fails the insert.

Every run gets three completed step rows, as if ``preserve_steps=True`` had
been on: the worst case for the steps table, whose index the hot path uses.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from durably.ids import new_id
from durably.schema import runs, steps

from .apps import JOB, STEPS, AppConfig, build

DAY_MS = 86_400_000


def _insert_sql(table: sa.Table, columns: Iterable[str]) -> str:
    """An INSERT of ``columns``; the schema's defaults fill in the others, as for a trigger."""
    columns = list(columns)
    names = ", ".join(columns)
    params = ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({params})"


def _rows(count: int, start_ms: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    for n in range(count):
        at = start_ms + n
        run_id = new_id()
        run = {
            "id": run_id,
            "job_name": JOB,
            "status": "completed",
            "input": json.dumps({"n": n}),
            "output": '{"ok": true}',
            "error": None,
            "labels": "{}",
            "progress": None,
            "idempotency_key": None,
            "concurrency_key": None,
            "current_step_index": len(STEPS),
            "completed_step_count": len(STEPS),
            "lease_owner": None,
            "lease_expires_at": None,
            "lease_generation": 1,
            "started_at": at,
            "completed_at": at + 5,
            "created_at": at,
            "updated_at": at + 5,
            "run_at": at,
        }
        step_rows = [
            {
                "run_id": run_id,
                "name": name,
                "step_index": index,
                "status": "completed",
                "output": json.dumps({"n": n, "step": name}),
                "error": None,
                "lease_generation": 1,
                "started_at": at + index,
                "completed_at": at + index + 1,
            }
            for index, name in enumerate(STEPS)
        ]
        yield run, step_rows


def copy_into(path: Path, count: int) -> None:
    """Make ``path`` a migrated database holding ``count`` finished runs.

    The first call for a ``count`` builds a template file (100k runs take a
    few seconds); later calls copy it, so repetitions do not pay for it again.

    The copy is synced to disk before it is used, as a real history would
    be. Otherwise the first checkpoint of the timed run, which syncs the
    database file, writes out the whole fresh copy: 110 ms for the
    100,000-run file on this machine, 16 ms for the 10,000-run one, about 5%
    of a W2 and all of it charged to the longer history.
    """
    template = _templates.get(count)
    if template is None:
        template = _templates[count] = _build_template(count)
    shutil.copyfile(template, path)
    with path.open("rb") as copy:
        os.fsync(copy.fileno())


_templates: dict[int, Path] = {}


def _build_template(count: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="durably-bench-history-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / f"history-{count}.db"
    with build(AppConfig(f"sqlite:///{path}")) as durably:
        durably.migrate()
    insert(path, count)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file we copy
    finally:
        conn.close()
    return path


def insert(path: Path, count: int) -> None:
    """Add ``count`` completed runs (with their steps), created over the day before now."""
    _write(path, _rows(count, time.time_ns() // 1_000_000 - DAY_MS))


def insert_pending(path: Path, count: int) -> None:
    """Add ``count`` pending runs of the bench job, as ``batch_trigger`` would, only faster.

    For the memory workload, whose 20k runs would take longer to trigger
    through durably than to run.
    """
    now = time.time_ns() // 1_000_000
    pending = {
        "status": "pending",
        "output": None,
        "current_step_index": 0,
        "completed_step_count": 0,
        "lease_generation": 0,
        "started_at": None,
        "completed_at": None,
    }
    _write(
        path,
        (
            ({**run, **pending, "created_at": now, "updated_at": now, "run_at": now}, [])
            for run, _steps in _rows(count, now)
        ),
    )


def _write(path: Path, rows: Iterable[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    run_sql = _insert_sql(runs, first[0])
    step_sql = _insert_sql(steps, [c.name for c in steps.columns if c.name != "id"])
    rows = itertools.chain([first], rows)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        batch_runs: list[dict[str, Any]] = []
        batch_steps: list[dict[str, Any]] = []
        for run, step_rows in rows:
            batch_runs.append(run)
            batch_steps.extend(step_rows)
            if len(batch_runs) >= 5_000:
                conn.executemany(run_sql, batch_runs)
                conn.executemany(step_sql, batch_steps)
                batch_runs, batch_steps = [], []
        conn.executemany(run_sql, batch_runs)
        conn.executemany(step_sql, batch_steps)
        conn.execute("COMMIT")  # no ANALYZE: durably never runs one, so users have no stats
    finally:
        conn.close()
