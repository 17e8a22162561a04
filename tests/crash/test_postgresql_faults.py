"""PostgreSQL's own faults under real worker processes: the server restarts, a worker's
connections are terminated, another client holds a run's row lock.

These are what a user of a PostgreSQL server meets (a deploy of the server, a
failover, an administrator's ``pg_terminate_backend``, a long transaction of
the application's own), as SQLite's users meet a locked or read-only file
(test_db_faults.py). In each, the promise is the same: every run completes, no
step whose result was stored runs again, no worker process dies of it, and a
call that cannot get through in time raises a durably error, never a driver's.

The restart tests stop a server of their own (one for this module), so that the
session's server, which every other PostgreSQL test shares, keeps running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from durably import DatabaseError, DatabaseLockedError, Durably, DurablyError
from tests.postgres import server as postgres

from .harness import (
    WAIT,
    Cluster,
    Worker,
    assert_every_step_ran_once_under_one_lease,
    assert_nothing_lost_and_no_stored_step_rerun,
    stop_all,
    trigger_mixed,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STEPS = ("s1", "s2", "s3")
RUNS = 24
STEP_SLEEP = "0.02,0.08"
"""Each step takes a few tens of milliseconds: the fault lands while steps are running."""
SETTINGS = {"CRASH_STEP_SLEEP": STEP_SLEEP, "CRASH_LOCK_TIMEOUT": "2", "CRASH_STALE": "2"}


@pytest.fixture(scope="module")
def own_server() -> Iterator[postgres.Server]:
    """A PostgreSQL server of this module's own: its tests stop it, the session's must not."""
    try:
        # A commit is kept once acknowledged, as on a user's server: the session's server
        # does not wait for its WAL (synchronous_commit off), so a crash there loses the
        # last commits, claims included, which no client can make up for.
        server = postgres.start_server(settings={"synchronous_commit": "on"})
    except postgres.ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield server
    server.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[postgres.Server], Cluster]]:
    """A ``Cluster`` on a new database of ``server``; every worker killed at teardown."""
    made: list[Cluster] = []

    def factory(server: postgres.Server, **settings: str) -> Cluster:
        directory = tmp_path / f"cluster-{len(made)}"
        directory.mkdir()
        url = server.url(server.create_database("faults"))
        cluster = Cluster(directory, "postgresql", directory / "unused.db", db_url=url, **settings)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()


def _ready(cluster: Cluster, lock_timeout: float = 2.0) -> Durably:
    """The cluster's client, with the schema and the claim audit in place."""
    client = cluster.client(lock_timeout=lock_timeout)
    client.migrate()
    cluster.install_claim_audit(client)
    return client


def _wait_started(cluster: Cluster, workers: list[Worker]) -> None:
    """Until every worker has said it started: the faults here are those of a running worker.

    A worker that cannot reach the database while it starts exits with the error
    (``durably: ...``, status 1), as for a wrong URL, for its supervisor to start
    it again.
    """
    cluster.wait_for(
        lambda: all(" started (" in worker.text() for worker in workers), "every worker started"
    )


def _completed(client: Durably) -> int:
    try:
        return len(client.get_runs(status="completed", limit=None))
    except DurablyError:  # the server is down, or just back
        return 0


def _assert_workers_rode_it_out(cluster: Cluster, workers: list[Worker]) -> None:
    """Every worker is still running, stops cleanly, and reported only durably errors."""
    assert all(w.alive() for w in workers), cluster.diagnostics()
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0] * len(workers), cluster.diagnostics()
    for worker in workers:
        assert "Traceback" not in worker.text(), worker.text()[-3000:]
    raw = [e for e in cluster.events("worker-error") if not e["durably_error"]]
    assert raw == [], raw


@pytest.mark.parametrize(("mode", "down"), [("fast", 0.0), ("immediate", 1.5)])
def test_workers_ride_out_a_server_restart(
    own_server: postgres.Server, make_cluster: Callable[..., Cluster], mode: str, down: float
) -> None:
    """``fast``: ``pg_ctl restart`` (every session ended, the server back at once);
    ``immediate``: the server drops everything, as in a crash, and is back ``down`` s later.
    A trigger while it is down raises a DatabaseError; the first one once it is back works."""
    cluster = make_cluster(own_server, **SETTINGS)
    client = _ready(cluster)
    job = client.get_job("steps")
    assert job is not None
    workers = [cluster.start_worker(engine=engine) for engine in ("thread", "asyncio")]
    _wait_started(cluster, workers)
    runs = trigger_mixed(client, RUNS, len(STEPS), chunk=6)
    cluster.wait_for(lambda: _completed(client) >= 3, "a few runs completed")

    own_server.shut_down(mode)
    if down:
        started = time.monotonic()
        with pytest.raises(DatabaseError):
            job.trigger({"n": -1, "steps": len(STEPS)})
        time.sleep(max(0.0, down - (time.monotonic() - started)))
    own_server.start()
    runs.append(job.trigger({"n": RUNS, "steps": len(STEPS)}))

    cluster.wait_for(lambda: _completed(client) == len(runs), "every run completed")
    _assert_workers_rode_it_out(cluster, workers)
    assert_nothing_lost_and_no_stored_step_rerun(cluster, client, runs, STEPS, f"restart {mode}")


# -- a worker's connections terminated -------------------------------------------------


def _named(cluster: Cluster, name: str) -> dict[str, str]:
    """The environment of a worker whose connections carry ``application_name=name``."""
    return {"CRASH_DB_URL": f"{cluster.db_url}&application_name={name}"}


def _terminate(server: postgres.Server, name: str) -> int:
    """``pg_terminate_backend`` on every connection named ``name``; how many there were."""
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return len(rows)


@pytest.mark.both_engines
def test_a_workers_terminated_connections_are_replaced_unnoticed(
    postgres_server: postgres.Server, make_cluster: Callable[..., Cluster], engine: str
) -> None:
    """An administrator ends a worker's idle connections (its pool's and its ``LISTEN``)
    while a step runs: the worker carries on on new ones; every step runs once, under the
    run's one lease."""
    cluster = make_cluster(postgres_server, CRASH_BLOCK="s2")
    client = _ready(cluster)
    worker = cluster.start_worker(engine=engine, env=_named(cluster, "durably-a"))
    _wait_started(cluster, [worker])
    runs = trigger_mixed(client, 4, len(STEPS), chunk=4)
    cluster.wait_for_event("blocked", point="s2")
    cluster.wait_for(lambda: _terminate(postgres_server, "durably-a") > 0, "its connections")

    cluster.release()
    cluster.wait_for(lambda: _completed(client) == len(runs), "every run completed")
    _assert_workers_rode_it_out(cluster, [worker])
    assert_every_step_ran_once_under_one_lease(cluster, client, runs, STEPS)


def test_connections_terminated_mid_run_lose_nothing(
    postgres_server: postgres.Server, make_cluster: Callable[..., Cluster]
) -> None:
    """A worker's connections are ended again and again while it runs steps, in the middle
    of its transactions too: what it could not write is left to its lease, and the runs are
    finished, by it or by the other worker; no stored step runs again."""
    cluster = make_cluster(postgres_server, **SETTINGS)
    client = _ready(cluster)
    hit = cluster.start_worker(env=_named(cluster, "durably-hit"))
    other = cluster.start_worker(engine="asyncio")
    _wait_started(cluster, [hit, other])
    runs = trigger_mixed(client, RUNS, len(STEPS), chunk=6)
    cluster.wait_for(lambda: _completed(client) >= 2, "a few runs completed")
    terminated = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        terminated += _terminate(postgres_server, "durably-hit")
        time.sleep(0.05)
    assert terminated > 0

    cluster.wait_for(lambda: _completed(client) == RUNS, "every run completed")
    _assert_workers_rode_it_out(cluster, [hit, other])
    assert_nothing_lost_and_no_stored_step_rerun(cluster, client, runs, STEPS, "terminated")


# -- a row lock held by another client ---------------------------------------------------


def test_a_row_lock_past_lock_timeout_raises_and_work_resumes_when_released(
    postgres_server: postgres.Server, make_cluster: Callable[..., Cluster]
) -> None:
    """The application holds ``SELECT ... FOR UPDATE`` on two runs' rows longer than
    ``lock_timeout``, a pending one and then one mid-step: a worker with a free slot claims
    past the pending one (it waits, no error); a call that must change either raises
    DatabaseLockedError and changes nothing; the worker's lease renewal reports the same
    error and the worker stays up. Once the transaction ends, both runs finish, every step
    once, under one lease."""
    cluster = make_cluster(
        postgres_server,
        CRASH_BLOCK="s2",
        CRASH_LOCK_TIMEOUT="0.5",
        CRASH_STALE="5",
        CRASH_SLOTS="2",
    )
    client = _ready(cluster, lock_timeout=0.3)
    job = client.get_job("steps")
    assert job is not None
    pending, running = job.batch_trigger([{"n": n, "steps": len(STEPS)} for n in range(2)])

    with postgres_server.admin(make_url(cluster.db_url).database) as holder, holder.transaction():
        lock = "SELECT id FROM durably_runs WHERE id = %s FOR UPDATE"
        holder.execute(lock, (pending.id,))
        worker = cluster.start_worker()
        cluster.wait_for_event("blocked", point="s2", run=running.id)
        holder.execute(lock, (running.id,))

        for run in (running, pending):
            started = time.monotonic()
            with pytest.raises(DatabaseLockedError):
                client.cancel(run.id)
            assert time.monotonic() - started < 5
        cluster.wait_for_event("worker-error", type=DatabaseLockedError.__name__)
        assert client.get_run(pending.id).status == "pending"  # type: ignore[union-attr]
        assert worker.alive()

    cluster.release()
    for run in (running, pending):
        assert client.wait_for_run(run.id, timeout=WAIT).status == "completed"
    _assert_workers_rode_it_out(cluster, [worker])
    errors = cluster.events("worker-error")
    assert {(e["type"], e["context"]) for e in errors} == {
        (DatabaseLockedError.__name__, "lease-renewal")
    }, errors
    assert_every_step_ran_once_under_one_lease(cluster, client, [running, pending], STEPS)
