"""``python -m bench.profile``: the SQL-per-run view that guides work on the hot path."""

from __future__ import annotations

from bench.profile import threaded


def test_the_statement_counts_see_every_write_of_a_run() -> None:
    # The writes of steps go through the one connection write batches share,
    # which stays checked out of the pool: a counter that missed it would
    # report a run as almost free of SQL.
    report = threaded("sqlite", runs=40)
    per_run = {
        line[9:].strip(): float(line[:7]) for line in report.splitlines()[3:] if line[:7].strip()
    }
    assert per_run["INSERT INTO durably_steps"] == 3.0
    assert per_run["BEGIN IMMEDIATE"] == per_run["COMMIT"]
    assert 0 < per_run["COMMIT"] <= 5.0
