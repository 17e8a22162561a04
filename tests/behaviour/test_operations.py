"""The operator's API: queue stats that tell stale runs from running ones, purging by age,
and errors that name what is wrong."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durably import DatabaseError, Durably, StepContext, ValidationError, testing


def _echo(step: StepContext, input: Any) -> Any:
    return step.run("echo", lambda: input)


def test_queue_stats_count_a_run_whose_lease_expired_as_stale_not_running(
    durably: Durably,
) -> None:
    job = durably.job("echo")(_echo)
    run = job.trigger(1)
    job.trigger(2)
    assert testing.claim(durably, "a-worker-that-dies") is not None
    stats = durably.get_queue_stats()
    assert (stats.pending, stats.running, stats.stale) == (1, 1, 0)

    testing.expire_lease(durably, run.id)
    stats = durably.get_queue_stats()
    assert (stats.pending, stats.running, stats.stale) == (1, 0, 1)

    assert durably.process_until_idle() == 2  # a live worker takes the stale run over
    stats = durably.get_queue_stats()
    assert (stats.pending, stats.running, stats.stale) == (0, 0, 0)


@pytest.mark.parametrize("age", ["2d", timedelta(days=2)], ids=["duration", "timedelta"])
def test_purge_runs_by_age(durably: Durably, age: str | timedelta) -> None:
    job = durably.job("echo")(_echo)
    job.trigger(1)
    durably.process_until_idle()
    pending = job.trigger(2)
    with testing.fake_clock(durably) as clock:
        assert durably.purge_runs(older_than=age) == 0  # finished just now
        clock.advance(timedelta(days=3).total_seconds())
        assert durably.purge_runs(older_than=age) == 1
    assert [run.id for run in durably.get_runs()] == [pending.id]


@pytest.mark.parametrize(
    "older_than",
    [datetime(2026, 1, 1), "30", "30s", "-1d", "0d", timedelta(0), 30],
    ids=["naive-datetime", "no-unit", "seconds", "negative", "zero", "zero-timedelta", "int"],
)
def test_purge_runs_refuses_what_is_not_a_moment_or_an_age(
    durably: Durably, older_than: Any
) -> None:
    with pytest.raises(ValidationError, match="older_than"):
        durably.purge_runs(older_than=older_than)


def test_purge_runs_takes_an_aware_datetime(durably: Durably) -> None:
    job = durably.job("echo")(_echo)
    job.trigger(1)
    durably.process_until_idle()
    assert durably.purge_runs(datetime.now(timezone.utc) + timedelta(minutes=1)) == 1


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+libsql"])
def test_a_missing_directory_is_named(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "not-mounted" / "app.db"
    with (
        Durably(f"{scheme}:///{path}") as durably,
        pytest.raises(DatabaseError, match=r"its directory '.*not-mounted' does not exist"),
    ):
        durably.migrate()
