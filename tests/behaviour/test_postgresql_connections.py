"""A pooled connection the server dropped is replaced without the user noticing.

durably's pool does not ping a connection before each use; a transaction
that finds its connection dead before anything was committed is sent again
on a fresh one (:mod:`durably.storage.postgresql`). Here the server
terminates every backend of a running ``Durably`` (``pg_terminate_backend``
from a connection of its own, as an administrator or a failover would), and
the next trigger, the next step and the next read succeed, with no worker
error and no step run twice, on both engines. A connection lost while its
``COMMIT`` is under way is another matter: the caller is told, and the
transaction is not sent twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from durably import DatabaseError, Durably, RunStatus
from tests.postgres.server import Server

WAIT = 15.0
ROUNDS = 3
QUIET_SECONDS = 0.2


def _terminate_backends(server: Server, url: str) -> int:
    """Terminate every backend connected to ``url``'s database; how many there were.

    Between two transactions of theirs: a backend killed while its ``COMMIT`` is under way
    leaves an outcome durably rightly reports as unknown (another test's subject).
    """
    database = make_url(url).database
    with server.admin() as conn:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_SECONDS:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid() AND state <> 'idle'",
                (database,),
            ).fetchone()
            if busy is not None and busy[0]:
                quiet_since = time.monotonic()
            time.sleep(0.01)
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


IDLE = {"polling_interval": 60.0, "heartbeat_interval": 5.0, "stale_threshold": 30.0}
"""A worker that writes nothing while idle (a trigger in its process wakes it), so that its
backends can be killed between its transactions."""


@pytest.fixture
def durably(postgres_db: str) -> Iterator[Durably]:
    instance = Durably(postgres_db, **IDLE)
    instance.migrate()
    yield instance
    instance.close()


def _worker_errors(durably: Durably) -> list[Any]:
    errors: list[Any] = []
    durably.on("worker:error", errors.append)
    return errors


def test_the_thread_engine_keeps_working_after_its_connections_are_killed(
    durably: Durably, postgres_server: Server, postgres_db: str
) -> None:
    calls: Counter[int] = Counter()
    in_step, release = threading.Event(), threading.Event()

    @durably.job("echo")
    def echo(step: Any, input: dict[str, int]) -> dict[str, int]:
        def first() -> int:
            calls[input["n"]] += 1
            if input.get("hold"):
                in_step.set()
                assert release.wait(WAIT)
            return input["n"]

        n = step.run("first", first)
        return {"n": step.run("second", lambda: n * 2)}

    errors = _worker_errors(durably)
    durably.start()
    for n in range(ROUNDS):
        assert echo.trigger_and_wait({"n": n}, timeout=WAIT).output == {"n": n * 2}
        assert _terminate_backends(postgres_server, postgres_db) > 0
        # the trigger, the worker's claim, steps and completion, and the reads
        # all run on connections the server has dropped
        run = echo.trigger({"n": n + 100})
        assert durably.wait_for_run(run.id, timeout=WAIT).output == {"n": (n + 100) * 2}

    # killed while a step runs: its result and the run's completion are written
    held = echo.trigger({"n": 7, "hold": 1})
    assert in_step.wait(WAIT)
    assert _terminate_backends(postgres_server, postgres_db) > 0
    release.set()
    done = durably.wait_for_run(held.id, timeout=WAIT)
    assert (done.status, done.output) == (RunStatus.COMPLETED, {"n": 14})
    assert done.attempt == 1
    assert all(count == 1 for count in calls.values()), calls
    assert [(e.context, e.error) for e in errors] == []


def test_the_asyncio_engine_keeps_working_after_its_connections_are_killed(
    durably: Durably, postgres_server: Server, postgres_db: str
) -> None:
    calls: Counter[int] = Counter()

    @durably.job("echo")
    async def echo(step: Any, input: dict[str, int]) -> dict[str, int]:
        async def first() -> int:
            calls[input["n"]] += 1
            return input["n"]

        n = await step.run("first", first)
        return {"n": n * 2}

    errors = _worker_errors(durably)

    async def main() -> None:
        await durably.start_async()
        try:
            for n in range(ROUNDS):
                done = await echo.trigger_and_wait_async({"n": n}, timeout=WAIT)
                assert done.output == {"n": n * 2}
                killed = await asyncio.to_thread(_terminate_backends, postgres_server, postgres_db)
                assert killed > 0
                run = await echo.trigger_async({"n": n + 100})
                done = await durably.wait_for_run_async(run.id, timeout=WAIT)
                assert (done.status, done.output) == (RunStatus.COMPLETED, {"n": (n + 100) * 2})
                assert done.attempt == 1
        finally:
            await durably.stop_async()

    asyncio.run(main())
    assert all(count == 1 for count in calls.values()), calls
    assert [(e.context, e.error) for e in errors] == []


def test_a_read_after_the_connections_are_killed_succeeds(
    durably: Durably, postgres_server: Server, postgres_db: str
) -> None:
    """No worker at all: the caller's own reads and triggers meet the dead connections."""

    @durably.job("echo")
    def echo(step: Any, input: dict[str, int]) -> dict[str, int]:
        return input

    first = echo.trigger({"n": 1})
    assert _terminate_backends(postgres_server, postgres_db) > 0
    found = echo.get_run(first.id)
    assert found is not None
    assert found.status is RunStatus.PENDING
    assert _terminate_backends(postgres_server, postgres_db) > 0
    second = echo.trigger({"n": 2})
    assert {run.id for run in echo.get_runs()} == {first.id, second.id}


def test_a_connection_lost_at_commit_is_reported_and_not_sent_again(
    durably: Durably, postgres_server: Server
) -> None:
    """Whether a lost ``COMMIT`` reached the server is unknown: durably says so, and does not
    send the trigger again (which could store it twice)."""

    @durably.job("echo")
    def echo(step: Any, input: dict[str, int]) -> dict[str, int]:
        return input

    killed: list[int] = []

    def kill_own_backend(conn: Connection) -> None:
        if killed:
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        pid = driver.info.backend_pid
        with postgres_server.admin() as admin:  # waits until the backend is gone
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        killed.append(pid)

    sa.event.listen(durably.engine, "commit", kill_own_backend)
    try:
        with pytest.raises(DatabaseError, match="whether it was committed is unknown"):
            echo.trigger({"n": 1})
    finally:
        sa.event.remove(durably.engine, "commit", kill_own_backend)
    assert len(killed) == 1
    # this COMMIT never reached the server, and the trigger was not sent again
    assert echo.get_runs() == []
    assert echo.trigger({"n": 2}).status is RunStatus.PENDING


def test_a_connection_that_keeps_dropping_is_reported_after_one_new_try(
    durably: Durably, postgres_server: Server
) -> None:
    """One new connection per transaction: a server that drops that one too is an error the
    caller sees, not a loop."""

    @durably.job("echo")
    def echo(step: Any, input: dict[str, int]) -> dict[str, int]:
        return input

    killed: list[int] = []

    def kill_own_backend(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        if len(killed) < 5:  # enough for a loop to show, few enough to end
            with postgres_server.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (driver.info.backend_pid,))
            killed.append(driver.info.backend_pid)

    sa.event.listen(durably.engine, "begin", kill_own_backend)
    try:
        with pytest.raises(DatabaseError, match="terminating connection"):
            echo.trigger({"n": 1})
    finally:
        sa.event.remove(durably.engine, "begin", kill_own_backend)
    assert len(killed) == 2
    assert echo.get_runs() == []
