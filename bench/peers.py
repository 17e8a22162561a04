"""W1 and W2 on peer libraries: DBOS (durable workflows) and huey (a task queue).

Each measurement runs in a fresh process (``python -m bench.peers PEER
WORKLOAD DIR COUNT CAP SYNC``, one JSON line out): DBOS keeps global state
that must not leak into the next measurement. Peers are installed only in
``.venv-peers`` (``make bench-peers``); elsewhere their rows say "not
installed". Their configurations are documented in docs/performance.md.

Both peers run on a SQLite file in WAL mode with the same ``synchronous``
setting as durably and the floor, 4 concurrent runs, and the same work per
run: DBOS as a workflow of three ``@DBOS.step`` functions, huey (which has
no steps) as one task that builds the three results.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .apps import STEPS, inputs

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("dbos", "huey")
QUEUE = "bench"
DBOS_POLLING = 0.01
"""Seconds between DBOS queue polls; its default (1 s) caps a 4-slot queue at 4 runs/s."""
POLL = 0.005
"""Seconds between looks at a peer's table (or counter) for completed runs."""


def version(peer: str) -> str | None:
    """The installed version of ``peer``, or None when it cannot be imported."""
    if importlib.util.find_spec(peer) is None:
        return None
    return importlib.metadata.version(peer)


def measure(
    peer: str, workload: str, directory: Path, count: int, cap: float, sync: str
) -> dict[str, float]:
    """Run one measurement in a fresh process; returns ``{"count", "seconds", "planned"}``."""
    args = [peer, workload, str(directory), str(count), str(cap), sync]
    return in_process("bench.peers", args, timeout=cap + 300)


def in_process(module: str, args: list[str], timeout: float) -> dict[str, float]:
    """``python -m MODULE ARGS...``, whose last line of output is the measurement's JSON."""
    command = [sys.executable, "-m", module, *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def wait_until(predicate: Callable[[], bool], cap: float) -> None:
    """Look at ``predicate`` every POLL seconds until it holds or ``cap`` seconds have passed."""
    deadline = time.perf_counter() + cap
    while not predicate() and time.perf_counter() < deadline:
        time.sleep(POLL)


def measured(count: int, seconds: float, planned: int) -> dict[str, float]:
    """A measurement as ``main`` prints it: runs done, the seconds they took, runs planned."""
    return {"count": count, "seconds": seconds, "planned": planned}


# -- DBOS ---------------------------------------------------------------------


def _dbos(workload: str, directory: Path, count: int, cap: float, sync: str) -> dict[str, float]:
    import sqlalchemy as sa

    path = directory / "dbos.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", pool_size=10)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # What DBOS's own SQLite engine sets, plus WAL and the bench's synchronous.
        dbapi_connection.isolation_level = "IMMEDIATE"
        dbapi_connection.execute("PRAGMA busy_timeout = 30000")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")
        dbapi_connection.execute(f"PRAGMA synchronous = {sync}")

    watch = sqlite3.connect(path)

    def completed() -> int:
        sql = "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'"
        return int(watch.execute(sql).fetchone()[0])

    database = {"system_database_url": f"sqlite:///{path}", "system_database_engine": engine}
    return dbos_workload(workload, count, cap, database, completed)


def dbos_workload(
    workload: str, count: int, cap: float, database: dict[str, Any], completed: Callable[[], int]
) -> dict[str, float]:
    """DBOS's W1 or W2 on the system database that ``database`` names; on SQLite and PostgreSQL.

    ``database`` holds the DBOS settings that name the system database
    (``system_database_url``, and ``system_database_engine`` where the bench
    makes the connections itself); DBOS and its client are given the same.
    ``completed`` counts the workflows that have succeeded, read with the
    database's own driver, not through DBOS.
    """
    from dbos import DBOS, DBOSClient

    DBOS(config={"name": "bench", "log_level": "WARNING", **database})

    @DBOS.step()
    def step(n: int, name: str) -> dict[str, Any]:
        return {"n": n, "step": name}

    @DBOS.workflow()
    def three_steps(n: int) -> dict[str, bool]:
        for name in STEPS:
            step(n, name)
        return {"ok": True}

    DBOS.launch()
    client = DBOSClient(**database)
    options: Any = {"queue_name": QUEUE, "workflow_name": three_steps.__qualname__}
    try:
        if workload == "w1":
            started = time.perf_counter()
            done = 0
            for item in inputs(count):
                client.enqueue(options, item["n"])
                done += 1
                if time.perf_counter() - started > cap:
                    break
            return measured(done, time.perf_counter() - started, count)
        # W2: everything enqueued first; the queue exists (so is served) from t=0.
        for item in inputs(count):
            client.enqueue(options, item["n"])
        started = time.perf_counter()
        DBOS.register_queue(QUEUE, worker_concurrency=4, polling_interval_sec=DBOS_POLLING)
        wait_until(lambda: completed() >= count, cap)
        elapsed = time.perf_counter() - started
        return measured(completed(), elapsed, count)
    finally:
        # A client given an engine leaves it to its owner: destroy() disposes only its own.
        client.destroy()
        DBOS.destroy(destroy_registry=True)


# -- huey ---------------------------------------------------------------------


def _huey(workload: str, directory: Path, count: int, cap: float, sync: str) -> dict[str, float]:
    from huey import Huey, signals
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # type: ignore[misc]
        """huey's SQLite storage (WAL by default) at the bench's ``synchronous`` setting."""

        def _create_connection(self) -> sqlite3.Connection:
            conn: sqlite3.Connection = super()._create_connection()
            conn.execute(f"PRAGMA synchronous = {sync}")
            return conn

    huey = Huey("bench", storage_class=Storage, filename=str(directory / "huey.db"))

    @huey.task()
    def three_steps(n: int) -> dict[str, Any]:
        return {"ok": True, "steps": [{"n": n, "step": name} for name in STEPS]}

    if workload == "w1":
        started = time.perf_counter()
        done = 0
        for item in inputs(count):
            three_steps(item["n"])
            done += 1
            if time.perf_counter() - started > cap:
                break
        return measured(done, time.perf_counter() - started, count)

    lock = threading.Lock()
    finished = [0]

    @huey.signal(signals.SIGNAL_COMPLETE)
    def _on_complete(_signal: str, _task: object, *_args: object, **_kwargs: object) -> None:
        with lock:
            finished[0] += 1

    for item in inputs(count):
        three_steps(item["n"])
    consumer = huey.create_consumer(
        workers=4, worker_type="thread", periodic=False, check_worker_health=False
    )
    started = time.perf_counter()
    consumer.start()
    wait_until(lambda: finished[0] >= count, cap)
    elapsed = time.perf_counter() - started
    consumer.stop(graceful=True)
    return measured(finished[0], elapsed, count)


RUNNERS = {"dbos": _dbos, "huey": _huey}


def main(argv: list[str]) -> int:
    peer, workload, directory, count, cap, sync = argv[1:7]
    result = RUNNERS[peer](workload, Path(directory), int(count), float(cap), sync)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
