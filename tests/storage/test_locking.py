"""Another process holding the write lock: durably waits it out, or fails with a typed error."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from durably import DatabaseLockedError, Durably, testing
from tests.faults import held_by_another_process

pytestmark = pytest.mark.both_engines

# The lock is taken with the same driver the test uses: mixing sqlite3 and
# libsql on one file in one process is unsafe, and across processes each
# driver must see the other's locks.
HOLDER = """
import sys, time
path, driver, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
if driver == "libsql":
    import libsql_experimental as db
else:
    import sqlite3 as db
conn = db.connect(path, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(seconds)
conn.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held(path: Path, driver: str, seconds: float) -> Iterator[None]:
    with held_by_another_process(HOLDER, str(path), driver, str(seconds), ready="locked"):
        yield


def _job(durably: Durably) -> Callable[..., object]:
    @durably.job("noop")
    def noop(step: object, input: dict[str, int]) -> dict[str, int]:
        return input

    return noop.trigger


def test_trigger_waits_for_a_lock_held_by_another_process(
    make_durably: Callable[..., Durably], db_path: Path, driver: str
) -> None:
    durably = make_durably()
    trigger = _job(durably)
    with write_lock_held(db_path, driver, seconds=0.8):
        started = time.monotonic()
        run = trigger({"n": 1})
        waited = time.monotonic() - started
    assert durably.get_run(run.id) is not None  # type: ignore[attr-defined]
    assert waited > 0.2  # it really waited for the other process, then succeeded


def test_lock_held_past_lock_timeout_raises_a_typed_error_and_stores_nothing(
    make_durably: Callable[..., Durably], db_path: Path, driver: str
) -> None:
    durably = make_durably(lock_timeout=0.3)
    trigger = _job(durably)
    with (
        write_lock_held(db_path, driver, seconds=1.5),
        pytest.raises(DatabaseLockedError, match="locked"),
    ):
        trigger({"n": 1})
    assert durably.get_runs() == []


def test_a_claim_refused_by_a_held_lock_leaves_its_connection_usable(
    make_durably: Callable[..., Durably], db_path: Path, driver: str
) -> None:
    durably = make_durably(lock_timeout=0.3, max_concurrent_runs=1)
    run = _job(durably)({"n": 1})
    failures: list[BaseException] = []
    # Held past lock_timeout, so the claim gives up.
    with write_lock_held(db_path, driver, seconds=2.0):
        try:
            testing.claim(durably, "worker-a")
        except DatabaseLockedError as exc:
            failures.append(exc)  # kept, as a worker:error listener may keep it
    assert failures
    # The same pooled connection serves the next reads and the claim.
    for _ in range(3):
        assert [r.id for r in durably.get_runs(status="pending")] == [run.id]  # type: ignore[attr-defined]
    assert durably.process_one()


def test_worker_rides_out_a_held_lock_and_completes_runs(
    make_durably: Callable[..., Durably], db_path: Path, driver: str
) -> None:
    durably = make_durably()
    trigger = _job(durably)
    runs = [trigger({"n": n}) for n in range(5)]
    errors: list[str] = []
    durably.on("worker:error", lambda event: errors.append(str(event.error)))
    with write_lock_held(db_path, driver, seconds=0.8):
        durably.start()
        time.sleep(0.3)
    for run in runs:
        assert durably.wait_for_run(run.id, timeout=20).output == run.input  # type: ignore[attr-defined]
    assert errors == []  # the wait happened inside durably; nothing surfaced


def test_a_write_waiting_out_another_process_keeps_its_connection(
    make_durably: Callable[..., Durably], db_path: Path, driver: str
) -> None:
    """Contended writers retry often (every 0.2 ms at first): a refused lock costs no checkout."""
    durably = make_durably()
    trigger = _job(durably)
    trigger({"n": 0})  # the schema check and the writer's first checkout
    checkouts: list[object] = []
    sa.event.listen(durably.engine, "checkout", lambda conn, *_: checkouts.append(conn))
    with write_lock_held(db_path, driver, seconds=0.5):
        run = trigger({"n": 1})
    assert durably.get_run(run.id) is not None  # type: ignore[attr-defined]
    assert len(checkouts) <= 2, checkouts  # the read above, and a turnover were a second to pass


def test_your_transactions_on_durably_engine_still_wait_for_a_held_lock(
    make_durably: Callable[..., Durably],
    db_path: Path,
    driver: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only durably's writer gives up the driver's busy wait; the pool's connections keep it."""
    durably = make_durably()
    trigger = _job(durably)
    for conn in [durably.engine.connect() for _ in range(3)]:
        conn.close()  # idle in the pool, ahead of the writers to come
    monkeypatch.setattr("durably.storage.connections.WRITER_TURNOVER", 0.0)
    for n in range(3):
        trigger({"n": n})  # each write hands the last writer back, and takes an older one
    with durably.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE app_orders (id INTEGER PRIMARY KEY)")
    pooled = [durably.engine.connect() for _ in range(5)]  # every idle one, former writers too
    try:
        waits = {conn.exec_driver_sql("PRAGMA busy_timeout").scalar() for conn in pooled}
    finally:
        for conn in pooled:
            conn.close()
    assert 0 not in waits
    if driver == "sqlite":  # libSQL's driver would hold the GIL while it waits: 10 ms there
        with write_lock_held(db_path, driver, seconds=0.3), durably.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO app_orders DEFAULT VALUES")
        with durably.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM app_orders").scalar() == 1
