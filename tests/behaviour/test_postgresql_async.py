"""The asyncio API on PostgreSQL, awaited from whichever event loop a user has.

One ``Durably`` may be awaited from several loops (one ``asyncio.run`` after
another, two loops in threads at once) and closed after its loops have
ended. These tests do that and count the server's connections (the
session's PostgreSQL server) to see none is left open: what an application
relies on whether the asyncio engine reaches the server through durably's
database threads (as it does) or through async connections bound to a loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy.engine import make_url

from durably import AsyncStepContext, DatabaseLockedError, Durably, Job, RunStatus
from tests.conftest import FAST

T = TypeVar("T")
WAIT = 30.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def _server_url(url: str) -> str:
    """The URL psycopg itself takes: no SQLAlchemy driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _connections(url: str) -> int:
    """How many connections the server holds to the test's database, besides this one."""
    with psycopg.connect(_server_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _settled_connections(url: str, at_most: int) -> int:
    """The server's count once it has seen closed sockets go (a backend ends after its socket)."""
    deadline = time.monotonic() + 5
    count = _connections(url)
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _connections(url)
    return count


@pytest.fixture
def durably(postgres_db: str) -> Iterator[Durably]:
    instance = Durably(postgres_db, **FAST)
    instance.migrate()

    @instance.job("double")
    async def double(step: AsyncStepContext, n: int) -> int:
        async def compute() -> int:
            return n * 2

        first = await step.run("double", compute)
        return await step.run("echo", lambda: first)

    yield instance
    instance.close()


async def _trigger_and_process(durably: Durably, n: int) -> Any:
    run = await _job(durably, "double").trigger_async(n)
    # Another loop's process_one_async may claim this run, and this one the other's;
    # or this one finds none at that instant (the other claim holds the row it could
    # see, and its statement's snapshot predates the other loop's run): process on
    # until this run has ended.
    deadline = time.monotonic() + WAIT
    done = await durably.get_run_async(run.id)
    while done is not None and done.status in (RunStatus.PENDING, RunStatus.LEASED):
        assert time.monotonic() < deadline, done
        if not await durably.process_one_async():
            await asyncio.sleep(0.01)
        done = await durably.get_run_async(run.id)
    assert done is not None
    assert done.status is RunStatus.COMPLETED, done
    return done.output


def test_async_methods_work_from_one_event_loop_then_another(durably: Durably) -> None:
    assert run(_trigger_and_process(durably, 1)) == 2
    assert run(_trigger_and_process(durably, 2)) == 4
    assert run(_trigger_and_process(durably, 3)) == 6


def test_async_methods_work_from_two_event_loops_at_once(durably: Durably) -> None:
    outputs: list[Any] = []
    errors: list[BaseException] = []

    def loop(first: int) -> None:
        try:
            for n in range(first, first + 5):
                outputs.append(run(_trigger_and_process(durably, n)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(first,)) for first in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert sorted(outputs) == [n * 2 for n in (*range(5), *range(100, 105))]


def test_ended_loops_leave_no_connection_open(postgres_db: str, durably: Durably) -> None:
    # At most what durably's pool keeps, and its listener: a connection left
    # behind by each loop would be twenty more (how far the pool grows at
    # once depends on the machine's load, so it is not counted exactly).
    kept = durably.engine.pool.size() + 1  # type: ignore[attr-defined]
    for n in range(20):
        run(_trigger_and_process(durably, n))
    assert _settled_connections(postgres_db, kept) <= kept


def test_closing_after_the_loop_ended_does_not_hang_and_closes_every_connection(
    postgres_db: str,
) -> None:
    instance = Durably(postgres_db, **FAST)
    instance.migrate()
    instance.job("echo")(_echo)

    async def use() -> None:
        await instance.start_async()
        run = await _job(instance, "echo").trigger_async(7)
        done = await instance.wait_for_run_async(run.id, timeout=WAIT)
        assert done.output == 7
        await instance.stop_async()

    run(use())
    assert _connections(postgres_db) > 0
    closing = threading.Thread(target=instance.close)
    closing.start()
    closing.join(WAIT)
    assert not closing.is_alive()
    assert _settled_connections(postgres_db, 0) == 0


def test_closing_on_the_loop_closes_every_connection(postgres_db: str) -> None:
    async def use_then_close() -> None:
        async with Durably(postgres_db, **FAST) as instance:
            await instance.migrate_async()
            job = instance.job("echo")(_echo)
            run = await job.trigger_async(1)
            assert await instance.process_one_async()
            assert (await instance.wait_for_run_async(run.id, timeout=WAIT)).output == 1

    run(use_then_close())
    assert _settled_connections(postgres_db, 0) == 0


def test_the_asyncio_worker_processes_runs(durably: Durably) -> None:
    async def work() -> list[Any]:
        await durably.start_async()
        try:
            job = _job(durably, "double")
            runs = [await job.trigger_async(n) for n in range(20)]
            done = [await durably.wait_for_run_async(r.id, timeout=WAIT) for r in runs]
        finally:
            await durably.stop_async()
        return [r.output for r in done]

    assert run(work()) == [n * 2 for n in range(20)]


def test_a_lock_held_past_lock_timeout_raises_database_locked_error(postgres_db: str) -> None:
    instance = Durably(postgres_db, lock_timeout=0.3, **FAST)
    instance.migrate()
    job = instance.job("echo")(_echo)
    try:
        with psycopg.connect(_server_url(postgres_db)) as holder:
            holder.execute("LOCK TABLE durably_runs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseLockedError, match=r"0\.3s"):
                run(job.trigger_async(1))
            assert time.monotonic() - started < WAIT
        # The lock gone, the same call goes through.
        created = run(job.trigger_async(2))
        assert instance.get_run(created.id) is not None
    finally:
        instance.close()


def _echo(step: Any, value: Any) -> Any:
    return value


def _job(durably: Durably, name: str) -> Job[Any, Any]:
    job = durably.get_job(name)
    assert job is not None
    return job
