"""``python -m bench.profile``: the SQL-per-run view that guides work on the hot path."""

from __future__ import annotations

import pytest

from bench import postgres
from bench.profile import threaded
from tests.postgres.server import Server


def _per_run(report: str) -> dict[str, float]:
    return {
        line[9:].strip(): float(line[:7]) for line in report.splitlines()[3:] if line[:7].strip()
    }


def test_the_statement_counts_see_every_write_of_a_run() -> None:
    # The writes of steps go through the one connection write batches share,
    # which stays checked out of the pool: a counter that missed it would
    # report a run as almost free of SQL.
    per_run = _per_run(threaded("sqlite", runs=40))
    assert per_run["INSERT INTO durably_steps"] == 3.0
    assert per_run["BEGIN IMMEDIATE"] == per_run["COMMIT"]
    assert 0 < per_run["COMMIT"] <= 5.0


def test_on_postgresql_the_counts_come_from_what_sqlalchemy_sends(
    postgres_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database(setting: str = "NORMAL") -> str:  # the session's server, not one more
        return postgres_server.url(postgres_server.create_database("bench"))

    monkeypatch.setattr(postgres.SERVER, "database", database)
    per_run = _per_run(threaded("postgresql", runs=40))
    assert per_run["INSERT INTO durably_steps"] == 3.0
    assert 0 < per_run["COMMIT"] <= per_run["BEGIN"] <= 6.0  # a read may end in a rollback
