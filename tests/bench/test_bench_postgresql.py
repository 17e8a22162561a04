"""The benchmark on PostgreSQL: its floor, durably and worker processes drain runs there."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import floor_postgresql, plan, postgres, processes
from bench.apps import Target
from bench.report import Result, table
from bench.workloads import ThreadEngine
from tests.postgres.server import Server


def test_without_postgresql_its_rows_are_one_line_that_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = "not run: no PostgreSQL server binaries"
    monkeypatch.setattr(postgres, "unavailable", lambda: reason)
    cases = plan.build(plan.Options(sizes=plan.QUICK, drivers=("sqlite", "postgresql")))
    on_postgresql = [case for case in cases if case.driver == "postgresql"]
    assert [case.skip for case in on_postgresql] == [reason]
    assert any(case.driver == "sqlite" and case.skip is None for case in cases)
    rows = table(Result(case) for case in cases).splitlines()
    assert sum(reason in row for row in rows) == 1


def test_the_floor_durably_and_worker_processes_drain_runs_on_postgresql(
    postgres_server: Server, tmp_path: Path
) -> None:
    def database() -> str:
        return postgres_server.url(postgres_server.create_database("bench"))

    # Each raises unless every run completed, fenced.
    assert floor_postgresql.end_to_end(database(), 40) > 0
    assert floor_postgresql.enqueue_single(database(), 20) > 0
    assert floor_postgresql.enqueue_batch(database(), 20) > 0

    in_process = ThreadEngine().end_to_end(
        Target("postgresql", tmp_path, database()), 30, cap=60, synchronous="NORMAL"
    )
    assert in_process.count == 30

    # Worker processes, watched and fed from the bench process over psycopg.
    drained = processes.drain(Target("postgresql", tmp_path, database()), 2, 30, cap=60)
    assert drained.throughput.count == 30
    assert sum(report["completed"] for report in drained.reports) == 30
