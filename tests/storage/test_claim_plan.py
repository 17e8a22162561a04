"""The claim and the listings are index-driven: their cost does not grow with finished runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from durably import Durably, QueueLimits
from durably.core.claim import claim_statement


def _claim_plan(durably: Durably, statement: sa.Update) -> list[str]:
    compiled = statement.compile(dialect=durably.engine.dialect)
    params = compiled.construct_params(
        {"claim_now": 1, "claim_owner": "worker", "claim_expires": 2}
    )
    assert compiled.positiontup is not None
    with durably.engine.connect() as conn:
        return [
            row[3]
            for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}",
                tuple(params[name] for name in compiled.positiontup),
            )
        ]


def _table_accesses(plan: list[str]) -> list[str]:
    return [line for line in plan if line.startswith(("SCAN", "SEARCH")) and " anon_" not in line]


@pytest.mark.parametrize(
    ("jobs", "queues"),
    [({"job"}, None), ({"job", "other", "third"}, None), ({"job"}, frozenset({"a", "b"}))],
)
def test_every_table_access_of_the_claim_uses_an_index(
    durably: Durably, jobs: set[str], queues: frozenset[str] | None
) -> None:
    plan = _claim_plan(durably, claim_statement(frozenset(jobs), queues))
    accesses = _table_accesses(plan)
    assert len(accesses) == 7  # the run itself, the three arms, their concurrency-key checks
    assert all(line.startswith("SEARCH") and "USING INDEX" in line for line in accesses), plan
    # The pending arm walks the claim index in claim order and stops at the
    # first due run: no sort of every pending run.
    assert "SEARCH pending USING INDEX ix_durably_runs_claim (status=?)" in plan, plan
    # The waiting arm seeks to the due waiting runs only: those still asleep
    # (run_at to come) are not read.
    assert "SEARCH waking USING INDEX ix_durably_runs_waiting (status=? AND run_at<?)" in plan
    # Leased and due waiting runs, few, are sorted, and so are the arms' candidates.
    assert sum("TEMP B-TREE" in line for line in plan) == 3, plan


def test_a_claim_within_queue_limits_counts_them_on_indexes_once(durably: Durably) -> None:
    limits = (
        QueueLimits("a", concurrency=2, rate_limit=(5, 1.0)),
        QueueLimits("b", concurrency=1),
    )
    plan = _claim_plan(durably, claim_statement(frozenset({"job"}), None, limits))
    accesses = _table_accesses(plan)
    # Besides the claim's own seven, per arm: two counts of live leases, one of claim times.
    assert len(accesses) == 7 + 3 * 3, plan
    assert all(line.startswith("SEARCH") and "INDEX" in line for line in accesses), plan
    # The counts do not depend on the run looked at: SQLite makes each once per claim.
    assert sum("CORRELATED" in line for line in plan) == 3, plan  # the concurrency-key checks


def _plans_of(durably: Durably, call: Callable[[], object]) -> list[list[str]]:
    """The query plan of every SELECT ``call`` makes, as SQLite would run it."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            statements.append((sql, params))

    sa.event.listen(durably.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(durably.engine, "before_cursor_execute", capture)
    with durably.engine.connect() as conn:
        return [
            [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
            for sql, params in statements
        ]


@pytest.mark.parametrize(
    "listing",
    [
        pytest.param(lambda d: d.get_runs(limit=20), id="all"),
        pytest.param(lambda d: d.get_runs(status="completed", limit=20), id="by status"),
        pytest.param(lambda d: d.get_runs(job_name="j", limit=20), id="by job"),
        pytest.param(lambda d: d.get_queue_stats(), id="queue stats"),
    ],
)
def test_listings_read_runs_in_index_order(
    durably: Durably, listing: Callable[[Durably], object]
) -> None:
    # Newest-first pages and the queue's oldest run come straight off an
    # index: no sort of every matching run, however many the table holds.
    plans = _plans_of(durably, lambda: listing(durably))

    assert plans
    for plan in plans:
        assert not any("TEMP B-TREE" in line for line in plan), plan
        assert all("USING" in line for line in plan if line.startswith(("SCAN", "SEARCH"))), plan
