"""What PostgreSQL must make itself that SQLite's single writer gives: claims side by side.

Each claimer is a ``Durably`` of its own (its own engine and pool, as a
worker process has), and they all claim at the same moment from threads
released by one barrier, on the session's PostgreSQL server. A run is never
claimed twice, a concurrency key is never leased twice, and a queue's
concurrency and rate limits hold, however the claims interleave. And
``LISTEN/NOTIFY`` wakes an idle worker of another instance (process) at
once, for a run enqueued in the application's own transaction too.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from durably import Durably, Job
from durably.testing import claim
from tests.conftest import FAST

CLAIMERS = 8
LEASED = {**FAST, "stale_threshold": 300.0}
"""Leases that outlast the test: nobody heartbeats ``testing.claim``'s leases, and a run
whose lease expired mid-test may rightly be claimed again."""
JOBS = ("echo", "echo-1", "echo-2", "echo-3", "echo-4")
"""A concurrency key has one pending run per job: five jobs give each key five candidates."""


def _echo(step: Any, input: Any) -> Any:
    return input


@pytest.fixture
def make_claimers(postgres_db: str) -> Iterator[Callable[..., list[Durably]]]:
    made: list[Durably] = []

    def factory(**queue_limits: Any) -> list[Durably]:
        for index in range(CLAIMERS):
            instance = Durably(postgres_db, **LEASED)
            instance.migrate()
            if queue_limits:
                instance.queue("limited", **queue_limits)

            for name in JOBS:
                instance.job(name)(_echo)

            made.append(instance)
            assert index == len(made) - 1
        return made

    yield factory
    for instance in made:
        instance.close()


def _claim_all_at_once(claimers: list[Durably]) -> list[dict[str, Any]]:
    """Every claimer claims until it finds nothing; the rows they got."""
    start = threading.Barrier(len(claimers))
    got: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(instance: Durably, worker: str) -> None:
        try:
            start.wait()
            while (claimed := claim(instance, worker)) is not None:
                with lock:
                    got.append(dict(claimed.row))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(instance, f"worker-{i}"))
        for i, instance in enumerate(claimers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return got


def test_every_run_is_claimed_once(make_claimers: Callable[..., list[Durably]]) -> None:
    claimers = make_claimers()
    echo = claimers[0].get_job("echo")
    assert echo is not None
    ids = {echo.trigger({"n": n}).id for n in range(120)}
    got = _claim_all_at_once(claimers)
    assert sorted(row["id"] for row in got) == sorted(ids)


def test_a_concurrency_key_is_leased_once(make_claimers: Callable[..., list[Durably]]) -> None:
    claimers = make_claimers()
    for name in JOBS:
        job = claimers[0].get_job(name)
        assert job is not None
        for key in range(4):
            job.trigger({"key": key}, concurrency_key=f"key-{key}")
    got = _claim_all_at_once(claimers)
    assert Counter(row["concurrency_key"] for row in got) == {f"key-{k}": 1 for k in range(4)}


def test_a_queues_concurrency_holds(make_claimers: Callable[..., list[Durably]]) -> None:
    claimers = make_claimers(concurrency=3)
    echo = claimers[0].get_job("echo")
    assert echo is not None
    for n in range(30):
        echo.trigger({"n": n}, queue="limited")
    assert len(_claim_all_at_once(claimers)) == 3


def test_a_queues_rate_limit_holds(make_claimers: Callable[..., list[Durably]]) -> None:
    claimers = make_claimers(rate_limit=(5, 3600))
    echo = claimers[0].get_job("echo")
    assert echo is not None
    for n in range(30):
        echo.trigger({"n": n}, queue="limited")
    assert len(_claim_all_at_once(claimers)) == 5


@pytest.fixture
def idle_worker(postgres_db: str) -> Iterator[tuple[Durably, Job[Any, Any]]]:
    """A worker whose next poll is a minute away; another ``Durably`` (another process,
    as far as notifications go) and its ``echo`` job, to trigger it with."""
    worker = Durably(postgres_db, **{**FAST, "polling_interval": 60.0})
    client = Durably(postgres_db, **FAST)
    try:
        worker.migrate()
        worker.job("echo")(_echo)
        worker.start()
        yield client, client.job("echo")(_echo)
    finally:
        worker.close()
        client.close()


def test_an_idle_worker_of_another_process_is_woken_at_once(
    idle_worker: tuple[Durably, Job[Any, Any]],
) -> None:
    """LISTEN/NOTIFY: a trigger in one process wakes an idle worker of another."""
    client, echo = idle_worker
    for n in range(3):  # the worker is idle again before each
        run = echo.trigger({"n": n})
        assert client.wait_for_run(run.id, timeout=10).output == {"n": n}


def test_a_run_enqueued_in_the_apps_session_wakes_another_process_once_committed(
    idle_worker: tuple[Durably, Job[Any, Any]], postgres_db: str
) -> None:
    """The application's own engine and ORM session, not durably's: the run is announced
    to the other processes' workers by its COMMIT, and a rollback leaves nothing."""
    client, echo = idle_worker
    app_engine = sa.create_engine(postgres_db)
    try:
        with Session(app_engine) as session:
            lost = echo.trigger({"n": 0}, connection=session.connection())
            session.rollback()
        assert client.get_run(lost.id) is None

        for n in range(1, 3):  # the worker is idle again before each
            with Session(app_engine) as session:
                run = echo.trigger({"n": n}, connection=session.connection())
                assert client.get_run(run.id) is None  # not before the COMMIT
                session.commit()
            assert client.wait_for_run(run.id, timeout=10).output == {"n": n}
    finally:
        app_engine.dispose()
