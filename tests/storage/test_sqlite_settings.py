"""The SQLite settings durably gives every connection of a local file (docs/deployment.md)."""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from durably import DatabaseError, Durably, ValidationError, testing
from durably.storage.commit.checkpointer import CHECKPOINT_PAUSE, Checkpointer
from tests.crash.harness import wait_for

LOCAL = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
CHECKPOINT_MARK = {"sqlite": 4000, "libsql": 1000}
"""libSQL's driver holds the GIL while it checkpoints, so its log stays at SQLite's default."""


def _pragmas(durably: Durably) -> dict[str, object]:
    with durably.engine.connect() as conn:
        values = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "wal_autocheckpoint")
        }
        conn.rollback()
    return values


@pytest.mark.parametrize("driver", sorted(LOCAL))
@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
def test_a_local_file_gets_wal_the_chosen_durability_and_its_driver_s_checkpoint_mark(
    tmp_path: Path, driver: str, synchronous: str, level: int
) -> None:
    durably = Durably(LOCAL[driver].format(path=tmp_path / "d.db"), synchronous=synchronous)
    try:
        durably.migrate()
        assert _pragmas(durably) == {
            "journal_mode": "wal",
            "synchronous": level,
            "wal_autocheckpoint": CHECKPOINT_MARK[driver],
        }
    finally:
        durably.close()


@pytest.mark.parametrize("synchronous", ["SOMETIMES", 2, None])
def test_an_unknown_durability_level_is_refused_before_anything_is_opened(
    tmp_path: Path, synchronous: Any
) -> None:
    with pytest.raises(ValidationError, match="synchronous"):
        Durably(f"sqlite:///{tmp_path / 'd.db'}", synchronous=synchronous)
    assert not (tmp_path / "d.db").exists()


# -- checkpoints off the writers' path (durably/checkpointer.py) ---------------


def _runs_in_the_file_alone(path: Path) -> int:
    """Runs a copy of the database file holds without its write-ahead log (0 if it has no table)."""
    copy = path.with_name("copy-" + path.name)
    shutil.copyfile(path, copy)
    try:
        conn = sqlite3.connect(copy)
        try:
            return int(conn.execute("SELECT count(*) FROM durably_runs").fetchone()[0])
        except sqlite3.DatabaseError:  # no table yet, or a page copied mid-checkpoint
            return 0
        finally:
            conn.close()
    finally:
        for leftover in (
            copy,
            copy.with_name(copy.name + "-wal"),
            copy.with_name(copy.name + "-shm"),
        ):
            leftover.unlink(missing_ok=True)


def _checkpoint_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "durably-checkpoint" and t.is_alive()}


def _trigger_three(durably: Durably) -> None:
    @durably.job("noop")
    def noop(step: object, input: dict[str, int]) -> dict[str, int]:
        return input

    for n in range(3):
        noop.trigger({"n": n})


def test_committed_runs_reach_the_database_file_soon_not_only_its_log(tmp_path: Path) -> None:
    # Three triggers are far below the checkpoint mark: SQLite alone would
    # leave them in the log until 4,000 pages had piled up, and the commit
    # that crossed the mark would sync them all, a trigger or step waiting.
    path = tmp_path / "d.db"
    others = _checkpoint_threads()
    durably = Durably(f"sqlite:///{path}")
    try:
        durably.migrate()
        _trigger_three(durably)
        wait_for(lambda: _runs_in_the_file_alone(path) == 3, "the runs to reach the file")
        assert len(_checkpoint_threads() - others) == 1
    finally:
        durably.close()
    assert not _checkpoint_threads() - others  # close() stops it


@pytest.mark.parametrize(("driver", "synchronous"), [("sqlite", "FULL"), ("libsql", "NORMAL")])
def test_sqlite_checkpoints_at_its_mark_at_full_durability_and_on_libsql(
    tmp_path: Path, driver: str, synchronous: str
) -> None:
    # At FULL every commit syncs the log already: checkpoints on a thread
    # only added syncs competing with the commits' (W2 9% slower). libSQL's
    # driver holds the GIL while it checkpoints, stopping every thread.
    path = tmp_path / "d.db"
    others = _checkpoint_threads()
    durably = Durably(LOCAL[driver].format(path=path), synchronous=synchronous)
    try:
        durably.migrate()
        _trigger_three(durably)
        time.sleep(20 * CHECKPOINT_PAUSE)
        assert _runs_in_the_file_alone(path) == 0
        assert not _checkpoint_threads() - others
    finally:
        durably.close()


class _Connection:
    """A driver connection that calls ``on_checkpoint`` for each ``wal_checkpoint`` it is sent."""

    def __init__(self, on_checkpoint: Callable[[], object]) -> None:
        self._on_checkpoint = on_checkpoint

    def cursor(self) -> _Connection:
        return self

    def execute(self, sql: str) -> _Connection:
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        self._on_checkpoint()
        return self

    def fetchall(self) -> list[object]:
        return []

    def close(self) -> None:
        pass


def test_a_failed_checkpoint_is_logged_and_the_next_write_tries_again_on_a_new_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpoints: queue.SimpleQueue[int] = queue.SimpleQueue()
    connections = 0

    def connect() -> _Connection:
        nonlocal connections
        connections += 1
        made = connections

        def checkpoint() -> None:
            checkpoints.put(made)
            if made == 1:
                raise sqlite3.OperationalError("disk I/O error")

        return _Connection(checkpoint)

    checkpointer = Checkpointer(connect, pause=0.01)
    try:
        checkpointer.nudge()
        assert checkpoints.get(timeout=10) == 1
        wait_for(lambda: "background WAL checkpoint failed" in caplog.text, "the warning")
        checkpointer.nudge()
        assert checkpoints.get(timeout=10) == 2
    finally:
        checkpointer.close()


def test_writes_in_a_row_share_a_checkpoint_per_pause() -> None:
    calls: list[float] = []
    checkpointer = Checkpointer(
        lambda: _Connection(lambda: calls.append(time.monotonic())), pause=0.2
    )
    try:
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            checkpointer.nudge()
            time.sleep(0.001)
    finally:
        checkpointer.close()
    assert 1 <= len(calls) <= 3  # about 500 nudges: one checkpoint per 0.2 s at most
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(calls))


def test_a_forked_child_checkpoints_on_a_thread_of_its_own() -> None:
    # The child has none of its parent's threads; the parent's had started
    # and was waiting, so a child that kept its state would wait on a thread
    # that does not exist, and never checkpoint.
    read, write = os.pipe()
    ran = threading.Event()

    def checkpoint() -> None:
        os.write(write, f"{os.getpid()}\n".encode())
        ran.set()

    checkpointer = Checkpointer(lambda: _Connection(checkpoint))
    try:
        checkpointer.nudge()
        assert ran.wait(10)
        ran.clear()
        pid = os.fork()
        if pid == 0:  # the child: one nudge must bring a checkpoint of its own
            code = 1
            try:
                checkpointer.nudge()
                code = 0 if ran.wait(10) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(read, 64).split() == [str(os.getpid()).encode(), str(pid).encode()]
    finally:
        checkpointer.close()
        os.close(read)
        os.close(write)


@pytest.mark.parametrize("driver", sorted(LOCAL))
@pytest.mark.parametrize("pragma", ["journal_mode", "wal_checkpoint"])
def test_the_upkeep_s_own_pragmas_fail_as_durably_errors(
    tmp_path: Path, driver: str, pragma: str
) -> None:
    """The idle upkeep asks the journal mode, then checkpoints the log, outside any
    transaction: a disk fault there reaches the worker as a ``DatabaseError`` too,
    not as the driver's own (libSQL's is a bare ``ValueError``)."""
    durably = Durably(LOCAL[driver].format(path=tmp_path / "d.db"))
    driver_error = sqlite3.OperationalError if driver == "sqlite" else ValueError

    def disk_fault(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(f"PRAGMA {pragma}"):
            raise driver_error("disk I/O error")

    try:
        durably.migrate()
        sa.event.listen(durably.engine, "before_cursor_execute", disk_fault)
        with pytest.raises(DatabaseError, match="cannot be opened: disk I/O error"):
            testing.run_maintenance(durably)
        sa.event.remove(durably.engine, "before_cursor_execute", disk_fault)
        testing.run_maintenance(durably)  # the fault is over: so is the error
    finally:
        durably.close()
