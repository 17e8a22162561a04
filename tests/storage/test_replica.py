"""Embedded replicas: the read API reads the replica, everything durably decides reads the primary.

The primary is the Hrana test server (a separate process serving ``db_path``).
libSQL's real replication protocol (gRPC) has no server here, so most tests
use ``CopyingReplica``: it opens the replica file with the real libSQL driver
and "syncs" by copying the primary's file with SQLite's backup API, which is
what a sync produces (the primary as of some moment). One test drives the
stock replica against the test server, to check what a failed sync looks like.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libsql_experimental
import pytest

from durably import Durably, Replica, ReplicaSyncError, RunStatus, ValidationError
from tests.conftest import DRIVERS, FAST, REMOTE_TOKEN
from tests.hrana.process import Server


@dataclass(frozen=True)
class CopyingReplica(Replica):
    """A replica file whose sync is a copy of the primary's file (SQLite's backup API).

    The copy goes through one stdlib connection kept open for the replica's
    lifetime. The stdlib's SQLite and libSQL's do not see each other's locks
    in one process (see docs/deployment.md): a stdlib connection that closed
    as "the last one" would remove the WAL the libSQL reader still uses.
    """

    primary: Path = Path()
    syncs: list[float] = field(default_factory=list)
    writer: list[sqlite3.Connection] = field(default_factory=list)

    def connect(self, sync_url: str, auth_token: str | None) -> Any:
        assert sync_url.startswith("http://127.0.0.1:")
        assert auth_token == REMOTE_TOKEN
        self.writer.append(sqlite3.connect(self.path, check_same_thread=False))
        return libsql_experimental.connect(
            str(self.path), isolation_level=None, check_same_thread=False
        )

    def close(self) -> None:
        for writer in self.writer:
            writer.close()

    def sync(self, connection: Any) -> None:
        source = sqlite3.connect(self.primary)
        try:
            source.backup(self.writer[-1])
        finally:
            source.close()
        self.syncs.append(time.monotonic())


@pytest.fixture
def remote_url(hrana_server: Server) -> str:
    return DRIVERS["remote"].format(port=hrana_server.port, token=REMOTE_TOKEN)


@pytest.fixture
def executed() -> list[str]:
    return []


def make_app(url: str, executed: list[str], replica: Replica | None = None) -> Durably:
    app = Durably(url, replica=replica, preserve_steps=True, **FAST)

    @app.job("two-steps")
    def two_steps(step: Any, input: dict[str, int]) -> int:
        a = step.run("a", lambda: executed.append("a") or input["n"])
        return int(step.run("b", lambda: executed.append("b") or a + 1))

    return app


def test_a_stale_replica_shows_an_older_state_and_decides_nothing(
    remote_url: str, db_path: Path, tmp_path: Path, executed: list[str]
) -> None:
    replica = CopyingReplica(
        tmp_path / "replica.db", sync_interval=3600, read_your_writes=False, primary=db_path
    )
    app = make_app(remote_url, executed, replica)
    other = make_app(remote_url, [])
    try:
        app.migrate()
        assert app.get_runs() == []
        assert len(replica.syncs) == 1  # the first read syncs

        run = other.jobs["two-steps"].trigger({"n": 1})
        assert app.get_run(run.id) is None  # not synced yet
        assert app.get_queue_stats().pending == 0

        # The worker claims from the primary and replays nothing it has not stored.
        assert app.process_one() is True
        assert executed == ["a", "b"]
        assert app.wait_for_run(run.id, timeout=5).output == 2
        assert app.get_run(run.id) is None  # the replica is still behind

        # Decisions read the primary: the replica has never seen this run.
        again = app.retrigger(run.id)
        assert again.status is RunStatus.PENDING
        assert other.get_run(again.id) == again
        assert len(replica.syncs) == 1
    finally:
        app.close()
        other.close()
        replica.close()


def test_read_your_writes_syncs_after_this_processes_writes(
    remote_url: str, db_path: Path, tmp_path: Path, executed: list[str]
) -> None:
    replica = CopyingReplica(tmp_path / "replica.db", primary=db_path)
    app = make_app(remote_url, executed, replica)
    other = make_app(remote_url, [])
    try:
        app.migrate()
        run = app.jobs["two-steps"].trigger({"n": 5})
        assert app.get_run(run.id) == run
        syncs = len(replica.syncs)
        assert app.get_runs() == [run]
        assert len(replica.syncs) == syncs  # nothing written since: no sync

        theirs = other.jobs["two-steps"].trigger({"n": 7})
        assert app.get_run(theirs.id) is None  # another process's write: not yet
        assert app.process_one() is True  # the older run: this process writes its steps
        mine = app.get_run(run.id)
        assert mine is not None
        assert mine.status is RunStatus.COMPLETED
        assert app.get_run(theirs.id) == other.get_run(theirs.id)  # that sync brought it too
        assert [step.name for step in app.get_steps(run.id)] == ["a", "b"]

        # A trigger inside the caller's own transaction counts once it commits.
        with app.engine.begin() as connection:
            in_transaction = app.jobs["two-steps"].trigger({"n": 9}, connection=connection)
        assert app.get_run(in_transaction.id) == in_transaction

        async def read_async() -> None:
            assert await app.get_run_async(run.id) == mine

        asyncio.run(read_async())
    finally:
        app.close()
        other.close()
        replica.close()


def test_a_replica_needs_a_remote_primary_and_a_way_to_sync(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="remote libSQL server"):
        Durably(f"sqlite:///{tmp_path / 'app.db'}", replica=tmp_path / "replica.db")
    with pytest.raises(ValidationError, match="sync_interval must be positive"):
        Replica(tmp_path / "replica.db", sync_interval=0)
    with pytest.raises(ValidationError, match="sync only once"):
        Replica(tmp_path / "replica.db", read_your_writes=False)


def test_a_replica_that_cannot_sync_fails_its_reads_and_nothing_else(
    remote_url: str, tmp_path: Path, executed: list[str]
) -> None:
    """The stock replica asks the test server for gRPC replication, which it does not serve."""
    app = make_app(remote_url, executed, Replica(tmp_path / "replica.db"))
    try:
        app.migrate()
        run = app.jobs["two-steps"].trigger({"n": 1})
        with pytest.raises(ReplicaSyncError, match=r"replica\.db.*could not sync from http://"):
            app.get_run(run.id)
        assert app.process_one() is True
        assert app.wait_for_run(run.id, timeout=5).output == 2
        assert executed == ["a", "b"]
    finally:
        app.close()
