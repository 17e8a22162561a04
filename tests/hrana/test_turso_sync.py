"""The replica tests' set-up, checked: durably writes to its primary (the Hrana test server),
whose ``--mirror`` replays each committed write on a real ``tursodb --sync-server``; a real
pyturso replica (``turso.sync``) pulls from it and holds what the primary holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import turso.sync

from durably import Durably
from tests.conftest import DRIVERS, FAST, REMOTE_TOKEN
from tests.hrana.process import Server, start_server, stop_server
from tests.hrana.tursodb import SyncServer, start_sync_server

RUNS = "SELECT id, job_name, status, input FROM durably_runs ORDER BY id"


@pytest.fixture
def sync_server(tmp_path: Path) -> Iterator[SyncServer]:
    server = start_sync_server(tmp_path, "sync")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def primary(tmp_path: Path, sync_server: SyncServer) -> Iterator[Server]:
    server = start_server(tmp_path, "primary", "--mirror", sync_server.url, token=REMOTE_TOKEN)
    try:
        yield server
    finally:
        stop_server(server.proc)
        mirror_errors = [e for e in server.trace() if "mirror_error" in e]
        assert mirror_errors == []


def primary_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(server.db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_pyturso_replica_holds_what_durably_committed(
    primary: Server, sync_server: SyncServer, tmp_path: Path
) -> None:
    app = Durably(DRIVERS["remote"].format(port=primary.port, token=REMOTE_TOKEN), **FAST)

    @app.job("greet")
    def greet(step: Any, input: dict[str, str]) -> str:
        return str(step.run("hello", lambda: "hello " + input["name"]))

    try:
        app.migrate()
        runs = [app.jobs["greet"].trigger({"name": name}) for name in ("ada", "bob")]
        assert app.process_one() is True

        replica = turso.sync.connect(str(tmp_path / "replica.db"), sync_server.url)
        try:
            assert [r[2] for r in replica.execute(RUNS).fetchall()] == ["completed", "pending"]
            assert replica.execute(RUNS).fetchall() == primary_rows(primary, RUNS)
            steps = "SELECT run_id, name, output FROM durably_steps ORDER BY run_id, name"
            assert replica.execute(steps).fetchall() == primary_rows(primary, steps)

            app.cancel(runs[1].id)
            assert replica.pull() is True
            assert replica.execute(RUNS).fetchall() == primary_rows(primary, RUNS)
            assert replica.pull() is False  # nothing new
            assert sum(e.get("mirror", 0) for e in primary.trace()) > 10
        finally:
            replica.close()
    finally:
        app.close()
