"""Schedules ticked by real worker processes: one run per tick, and catch-up after an outage.

Every worker process of the crash app declares the same schedule (``tick``,
``every=1``: ``CRASH_SCHEDULE_EVERY``) and ticks it from its own scheduler
thread. The processes race for every tick; the tick's idempotency key must
make it one run.

* Three processes (two thread engines, one asyncio engine) on one SQLite or
  libSQL file, and on a remote libSQL server (the Hrana test server), for
  six seconds: one run per tick, every tick from the schedule's declaration
  to the stop, none twice.
* Every worker stopped for five seconds, then restarted: the ticks missed
  meanwhile are handled by the schedule's ``catch_up`` policy. A catch-up
  run is one made later than the tick's grace (half a second for
  ``every=1``): ``latest`` makes exactly one, ``none`` none, ``all`` one per
  missed tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from durably import Durably, DurablyError
from durably.models import Run
from tests.hrana.process import start_server

from .harness import WAIT, Cluster, Worker, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ENGINES = ("thread", "asyncio", "thread")
OBSERVED = 6.0
"""Seconds the workers tick before they are stopped."""
OUTAGE = 5.0
"""Seconds every worker is down."""
TICK = timedelta(seconds=1)
GRACE = timedelta(seconds=0.5)
"""How late a tick of ``every=1`` may be found and still be on time (``Timetable.grace_ms``)."""
TOKEN = "crash-schedules-token"


def _registered(client: Durably) -> int:
    try:
        return len([w for w in client.get_workers() if not w.is_stale])
    except DurablyError:  # the schema is not there yet: the workers are still migrating
        return 0


def _scheduled(client: Durably) -> list[Run]:
    """The runs of the ``tick`` schedule, by tick."""
    runs = client.get_runs(labels={"durably.schedule": "tick"}, limit=None)
    return sorted(runs, key=lambda run: run.scheduled_for or run.created_at)


def _ticks(runs: list[Run]) -> list[datetime]:
    ticks = [run.scheduled_for for run in runs]
    assert None not in ticks
    return ticks  # type: ignore[return-value]


def _late(run: Run) -> bool:
    """A catch-up run: made later than the grace after its tick."""
    assert run.scheduled_for is not None
    return run.created_at - run.scheduled_for > GRACE


def _start(cluster: Cluster) -> tuple[list[Worker], Durably]:
    workers = [cluster.start_worker("--migrate", engine=engine) for engine in ENGINES]
    client = cluster.client()
    cluster.wait_for(lambda: _registered(client) == len(workers), "three registered workers")
    return workers, client


def _assert_one_run_per_tick(cluster: Cluster, stopped_at: datetime) -> list[Run]:
    """Every tick from the declaration to the stop has exactly one run, and no other run exists."""
    client = cluster.client()
    runs = _scheduled(client)
    ticks = _ticks(runs)
    assert len(set(ticks)) == len(ticks), "two runs for one tick"
    assert len({run.idempotency_key for run in runs}) == len(runs)
    (schedule,) = client.get_schedules()
    first = schedule.created_at.replace(microsecond=0) + TICK  # no run for the past
    assert ticks == [first + n * TICK for n in range(len(ticks))], "a tick without its run"
    # The last tick is the last one before the stop (or one in the second the stop took).
    assert stopped_at - 2 * TICK <= ticks[-1] <= stopped_at + TICK, (ticks[-1], stopped_at)
    assert len(ticks) >= OBSERVED - 1
    return runs


def _observe(cluster: Cluster) -> None:
    workers, client = _start(cluster)
    cluster.wait_for(lambda: _scheduled(client), "the first scheduled run")
    time.sleep(OBSERVED)  # the period observed: what is asserted is the runs it made
    stopped_at = datetime.now(timezone.utc)
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0] * len(workers), cluster.diagnostics()
    runs = _assert_one_run_per_tick(cluster, stopped_at)
    # The workers ran them too (a run or two may still wait after the stop).
    assert sum(run.status == "completed" for run in runs) >= len(runs) - 3
    assert cluster.events("worker-error") == []


def test_three_worker_processes_make_one_run_per_tick(
    make_cluster: Callable[..., Cluster],
) -> None:
    # catch_up="all": on a starved machine a tick found late still runs, so
    # the count is exact however slow the test machine is.
    _observe(make_cluster(CRASH_SCHEDULE_EVERY="1", CRASH_CATCH_UP="all"))


@pytest.fixture
def remote_url(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A libSQL server (the Hrana test server, its own process) on a fresh file."""
    directory = tmp_path / "server"
    directory.mkdir()
    server = start_server(directory, "durably", token=TOKEN, trace=False)
    yield server.db, f"{server.libsql_url}&auth_token={TOKEN}"
    server.stop()


def test_three_worker_processes_on_a_remote_server_make_one_run_per_tick(
    tmp_path: Path, remote_url: tuple[Path, str]
) -> None:
    db_path, url = remote_url
    directory = tmp_path / "cluster"
    directory.mkdir()
    cluster = Cluster(
        directory, "remote", db_path, db_url=url, CRASH_SCHEDULE_EVERY="1", CRASH_CATCH_UP="all"
    )
    try:
        _observe(cluster)
    finally:
        cluster.close()  # before the server stops


@pytest.mark.parametrize("catch_up", ["latest", "none", "all"])
def test_ticks_missed_while_every_worker_was_down_follow_the_catch_up_policy(
    make_cluster: Callable[..., Cluster], catch_up: str
) -> None:
    cluster = make_cluster(CRASH_SCHEDULE_EVERY="1", CRASH_CATCH_UP=catch_up)
    workers, client = _start(cluster)
    cluster.wait_for(lambda: len(_scheduled(client)) >= 2, "two scheduled runs")
    stop_all(workers)
    last_before = _ticks(_scheduled(client))[-1]

    time.sleep(OUTAGE)  # every worker down: the ticks of these seconds are missed
    restarted = [cluster.start_worker(engine=engine) for engine in ENGINES]
    cluster.wait_for(
        lambda: sum(tick > last_before + OUTAGE * TICK for tick in _ticks(_scheduled(client))) >= 2,
        "ticking again",
        WAIT,
    )
    stop_all(restarted)

    runs = _scheduled(client)
    ticks = _ticks(runs)
    assert len(set(ticks)) == len(ticks), "two runs for one tick"
    after = [run for run in runs if run.scheduled_for > last_before]  # type: ignore[operator]
    first_pass = min(run.created_at for run in after)  # the first pass after the restart
    missed = [
        last_before + n * TICK
        for n in range(1, 100)
        if last_before + n * TICK < first_pass - GRACE  # older than the grace at that pass
    ]
    assert len(missed) >= OUTAGE - 1
    caught_up = [run.scheduled_for for run in after if _late(run)]
    if catch_up == "latest":
        assert caught_up == [missed[-1]]
    elif catch_up == "none":
        assert caught_up == []
    else:
        assert caught_up == missed
        assert ticks == [ticks[0] + n * TICK for n in range(len(ticks))]  # no tick left out
