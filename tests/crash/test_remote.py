"""Worker processes on several "machines" sharing one remote libSQL server, which gets killed.

durably reaches a remote libSQL server through its own Hrana-over-HTTP driver
(``durably/hrana``). There is no sqld here: the server is the test server of
``tests/hrana`` (``server.py``), always a separate process, serving one SQLite
file and requiring an auth token. Every worker process and the test's client
reach the database through it only
(``sqlite+libsql://127.0.0.1:PORT?secure=false&auth_token=…``); nothing else
opens the file.

* Three worker processes (two thread engines, one asyncio engine; each its own
  "machine", sharing nothing but the server URL) race to migrate the fresh
  database, then drain 300 three-step runs (half ``def`` jobs, half
  ``async def``). Nothing fails and the lease is long, so every run is claimed
  once and every step executed and stored once, as in test_competing.py.
* The server is SIGKILLed while three workers are in the middle of 60 runs
  whose steps take a little while, and kept down for a few seconds: in-flight
  HTTP requests fail, open transactions vanish (SQLite rolls them back when the
  file is next opened), pooled streams are forgotten. The workers report
  ``worker:error`` and back off (few claim attempts, little CPU); the server is
  restarted on the same file and port, and the same worker processes carry on
  by themselves: nothing lost, no stored step re-run, at most the step in
  progress re-run per interrupted claim, no claim of a live lease.
* The same, with five short outages at random moments (a restart may land in
  the middle of a worker's transaction, or leave its lease alive).
* A worker SIGKILLed mid-step is replaced, through the server, by another
  worker that was already polling it. (Unlike a local file, whose locks die
  with the process, a worker killed inside a write transaction leaves it open
  on the server, holding the write lock, until its stream expires: 10 s here,
  as in sqld. The run then completes that much later, still as it should.)
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import DatabaseError, DatabaseLockedError, Durably, DurablyError, LeaseLostError
from durably.models import Run
from tests.hrana.process import Server, start_server

from .harness import (
    WAIT,
    Cluster,
    Worker,
    assert_claims_exclusive,
    assert_every_step_ran_once_under_one_lease,
    assert_nothing_lost_and_no_stored_step_rerun,
    cpu_seconds,
    query,
    stop_all,
    trigger_mixed,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOKEN = "crash-remote-token"
WORKER_ERROR_LINE = re.compile(r"durably worker error \((?P<context>[^,]+), run (?P<run>\S+)\)")

# -- the server -----------------------------------------------------------------------------


class Remote:
    """The test server on one database file; killed and restarted on the same file and port."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.server: Server = start_server(directory, "durably", token=TOKEN)
        self.db_path = self.server.db
        self.url = f"{self.server.libsql_url}&auth_token={TOKEN}"
        self.pids = [self.server.proc.pid]

    def kill(self) -> None:
        """``kill -9``: the server's streams and their open transactions vanish with it."""
        self.server.kill()

    def restart(self) -> None:
        """A new server process on the same file and port."""
        for attempt in range(20):
            try:
                self.server = self.server.restart()
                break
            except RuntimeError:  # the port is briefly unavailable: try again
                if attempt == 19:
                    raise
                time.sleep(0.25)
        self.pids.append(self.server.proc.pid)

    def close(self) -> None:
        if self.server.proc.poll() is None:
            self.server.stop()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    remote = Remote(tmp_path / "server")
    yield remote
    remote.close()


@pytest.fixture
def make_remote_cluster(tmp_path: Path, remote: Remote) -> Iterator[Callable[..., Cluster]]:
    """``Cluster``s whose processes reach the database through ``remote`` only; every
    worker killed and every client closed at teardown (before the server stops)."""
    made: list[Cluster] = []

    def factory(**settings: str) -> Cluster:
        directory = tmp_path / f"cluster-{len(made)}"
        directory.mkdir()
        cluster = Cluster(directory, "remote", remote.db_path, db_url=remote.url, **settings)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()


# -- reading the database and the workers' output ----------------------------------------------


def _registered(client: Durably) -> int:
    try:
        return len([w for w in client.get_workers() if not w.is_stale])
    except DurablyError:  # the schema is not there yet: the workers are still migrating
        return 0


def _completed(client: Durably) -> int:
    rows = query(client, "SELECT count(*) FROM durably_runs WHERE status = 'completed'")
    return int(rows[0][0])


def _lease_loss(event: dict[str, Any]) -> bool:
    """A worker:error saying a lease was lost: legitimate whenever a lease may expire
    (an outage longer than the lease, or a starved machine)."""
    return event["type"] == LeaseLostError.__name__ or (
        event["context"] == "lease-renewal" and "lost ownership" in event["error"]
    )


def _error_lines(worker: Worker) -> list[re.Match[str]]:
    """The ``worker error`` lines the ``durably worker`` command logged."""
    return [m for m in map(WORKER_ERROR_LINE.search, worker.text().splitlines()) if m]


# -- 1. three machines, one server -------------------------------------------------------------

RUNS = 300
STEPS = ("s1", "s2", "s3")
ENGINES = ("thread", "asyncio", "thread")


def test_three_worker_machines_on_one_remote_server_run_every_step_once(
    make_remote_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_remote_cluster(CRASH_STALE="30", CRASH_HEARTBEAT="1")
    # All three race to create the schema on the fresh file, through the server.
    workers = [cluster.start_worker("--migrate", engine=engine) for engine in ENGINES]
    client = cluster.client()
    cluster.wait_for(lambda: _registered(client) == len(workers), "three registered workers")
    cluster.install_claim_audit(client)

    runs = trigger_mixed(client, RUNS, len(STEPS), chunk=50)
    cluster.wait_for(lambda: _completed(client) == RUNS, "every run completed", WAIT * 2)
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0] * len(workers), cluster.diagnostics()

    done = assert_every_step_ran_once_under_one_lease(cluster, client, runs, STEPS)

    # The three machines really competed (both engines, both kinds of job), error-free.
    pids = {e["pid"] for e in cluster.events("start")}
    assert pids == {w.pid for w in workers}
    for kind in ("steps", "async-steps"):
        assert {done[r.id].output["finished_by"] for r in runs if r.job_name == kind} == pids, kind
    assert cluster.events("worker-error") == []
    assert [_error_lines(w) for w in workers] == [[]] * len(workers)


# -- 2. the server killed mid-run, and restarted ---------------------------------------------------

KILL_RUNS = 60
KILL_STEPS = ("s1", "s2", "s3", "s4")
HEARTBEAT = 0.2
OUTAGE_WINDOW = 2.0
"""Seconds over which each worker's CPU use is measured, inside the outage."""
MAX_CPU_SHARE = 0.25
"""CPU seconds per second a worker may use during the outage (a spinning loop uses ~1)."""
MAX_CLAIM_ERRORS = 20
"""Failed claims a worker may make during the outage (polling every 0.05 s would make ~60)."""
MAX_OTHER_ERRORS = 6
"""Errors besides claims and lease renewals: at most a few writes of the runs in flight."""
OUTAGE_CONTEXTS = {
    "claim",
    "lease-renewal",
    "step-cut-off",
    "step-persist",
    "run-execution",
    "idle-maintenance",
}


def _start_kill_cluster(
    make_remote_cluster: Callable[..., Cluster],
) -> tuple[Cluster, Durably, list[Run], list[Worker]]:
    """The setting of the server-kill tests: a migrated database with the claim audit,
    KILL_RUNS runs of KILL_STEPS slow-ish steps, short leases (1 s, renewed every
    HEARTBEAT), and one worker process per engine of ENGINES, started."""
    cluster = make_remote_cluster(
        CRASH_STEP_SLEEP="0.05,0.15", CRASH_STALE="1", CRASH_HEARTBEAT=str(HEARTBEAT)
    )
    client = cluster.client()
    client.migrate()
    cluster.install_claim_audit(client)
    runs = trigger_mixed(client, KILL_RUNS, len(KILL_STEPS), chunk=5)
    workers = [cluster.start_worker(engine=engine) for engine in ENGINES]
    return cluster, client, runs, workers


def test_workers_ride_out_a_killed_remote_server_and_lose_nothing_when_it_returns(
    make_remote_cluster: Callable[..., Cluster], remote: Remote
) -> None:
    cluster, client, runs, workers = _start_kill_cluster(make_remote_cluster)
    pids = {w.pid for w in workers}

    # Kill the server while every worker is busy with runs.
    cluster.wait_for(
        lambda: {e["pid"] for e in cluster.events("start")} >= pids and _completed(client) >= 6,
        "every worker executing steps",
    )
    killed_at = time.time()
    remote.kill()

    # Each worker process notices, reports it (its log lines), and keeps going.
    cluster.wait_for(
        lambda: all(_error_lines(w) for w in workers), "a 'worker error' line from every worker"
    )
    cpu_before = {w.pid: cpu_seconds(w.pid) for w in workers}
    window_start = time.monotonic()
    time.sleep(OUTAGE_WINDOW)
    elapsed = time.monotonic() - window_start
    cpu_share = {w.pid: (cpu_seconds(w.pid) - cpu_before[w.pid]) / elapsed for w in workers}
    assert all(w.alive() for w in workers), cluster.diagnostics()
    # The client cannot reach it either: a durably error, not a raw driver/socket error.
    job = client.get_job("steps")
    assert job is not None
    with pytest.raises(DatabaseError, match="libSQL server"):
        job.trigger({"n": -1, "steps": 1})

    remote.restart()
    restarted_at = time.time()
    cluster.wait_for(lambda: _completed(client) == KILL_RUNS, "every run completed", WAIT * 2)
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0] * len(workers), cluster.diagnostics()
    outage = restarted_at - killed_at
    context = f"outage {outage:.1f}s, server pids {remote.pids}\n{cluster.diagnostics()}"

    # -- backing off, not spinning --
    errors = cluster.events("worker-error")
    during = [e for e in errors if killed_at <= e["t"] <= restarted_at]
    for worker in workers:
        mine = Counter(e["context"] for e in during if e["pid"] == worker.pid)
        assert cpu_share[worker.pid] < MAX_CPU_SHARE, (cpu_share, context)
        assert 1 <= mine["claim"] <= MAX_CLAIM_ERRORS, (mine, context)
        # The heartbeat thread waits HEARTBEAT seconds between two renewals.
        assert mine["lease-renewal"] <= outage / HEARTBEAT + 2, (mine, context)
        others = sum(n for c, n in mine.items() if c not in ("claim", "lease-renewal"))
        assert others <= MAX_OTHER_ERRORS, (mine, context)
        # Every worker:error is a line of the command's output too.
        logged = [m["context"] for m in _error_lines(worker)]
        assert Counter(logged) == Counter(e["context"] for e in errors if e["pid"] == worker.pid)
    assert {e["context"] for e in during} <= OUTAGE_CONTEXTS, context
    durably_errors = {DatabaseError.__name__, DatabaseLockedError.__name__}
    assert {e["type"] for e in during} <= durably_errors, [
        (e["context"], e["type"], e["error"]) for e in during
    ]
    assert all(e["durably_error"] for e in during), [e for e in during if not e["durably_error"]]
    # Before and after the outage: at most a lease that expired (in the outage) reported lost.
    outside = [e for e in errors if not killed_at <= e["t"] <= restarted_at]
    assert all(map(_lease_loss, outside)), [(e["context"], e["type"], e["error"]) for e in outside]

    # -- recovering by themselves: each worker process finished runs it claimed afterwards --
    finished_after = {
        e["pid"] for e in cluster.events("complete") if e["ok"] and e["t"] > restarted_at
    }
    assert finished_after == pids, context

    done, _unfinished = assert_nothing_lost_and_no_stored_step_rerun(
        cluster, client, runs, KILL_STEPS, context
    )

    # The test did what it says: the kill interrupted claims, whose runs were taken over.
    assert sum(r.lease_generation > 1 for r in done.values()) >= 1, context


# -- 3. the server killed and restarted again and again ------------------------------------------

BLIPS = 5


def test_a_remote_server_killed_and_restarted_again_and_again_loses_nothing(
    make_remote_cluster: Callable[..., Cluster], remote: Remote
) -> None:
    """Short outages at random moments: a restart can land between two statements of
    a worker's transaction (its stream, and the transaction, are gone; durably runs
    the whole transaction again) or between two transactions (the pooled stream is
    silently replaced), and leases may or may not outlive the outage."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    cluster, client, runs, workers = _start_kill_cluster(make_remote_cluster)
    pids = {w.pid for w in workers}
    cluster.wait_for(
        lambda: {e["pid"] for e in cluster.events("start")} >= pids, "every worker executing steps"
    )

    outages: list[tuple[float, float]] = []
    while len(outages) < BLIPS and _completed(client) < KILL_RUNS:
        time.sleep(rng.uniform(0.1, 0.5))
        killed_at = time.time()
        remote.kill()
        # Down for longer than a heartbeat interval: every worker tries to reach it.
        time.sleep(rng.uniform(HEARTBEAT * 1.5, HEARTBEAT * 3))
        remote.restart()
        outages.append((killed_at, time.time()))
    cluster.wait_for(lambda: _completed(client) == KILL_RUNS, "every run completed", WAIT * 2)
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0] * len(workers), cluster.diagnostics()
    context = f"seed {seed}, {len(outages)} outages, server pids {remote.pids}"

    assert_nothing_lost_and_no_stored_step_rerun(cluster, client, runs, KILL_STEPS, context)
    errors = cluster.events("worker-error")
    assert {e["pid"] for e in errors if e["context"] == "lease-renewal"} == pids, context
    assert all(e["durably_error"] or _lease_loss(e) for e in errors), errors
    assert len(outages) == BLIPS, f"the runs were done before the outages ({context})"


# -- 4. a worker killed mid-step, finished by another machine ----------------------------------


@pytest.mark.parametrize(("victim", "successor"), [("thread", "asyncio"), ("asyncio", "thread")])
def test_a_worker_killed_mid_step_is_finished_by_another_machine_through_the_server(
    make_remote_cluster: Callable[..., Cluster], victim: str, successor: str
) -> None:
    cluster = make_remote_cluster(CRASH_BLOCK="s2", CRASH_STALE="1", CRASH_HEARTBEAT="0.2")
    client = cluster.client()
    client.migrate()
    cluster.install_claim_audit(client)
    first = cluster.start_worker(engine=victim)
    job = client.get_job("steps")
    assert job is not None
    run = job.trigger({"n": 7, "steps": 4})
    cluster.wait_for_event("blocked", run=run.id, point="s2")
    second = cluster.start_worker(engine=successor)  # another machine, polling the server
    cluster.wait_for(lambda: _registered(client) == 2, "the second worker registered")

    first.signal(signal.SIGKILL)
    first.wait()
    try:
        done = client.wait_for_run(run.id, timeout=WAIT)
    except TimeoutError:
        raise AssertionError(cluster.diagnostics()) from None
    stop_all([second])
    assert second.process.returncode == 0, cluster.diagnostics()

    names = ("s1", "s2", "s3", "s4")
    a, b = first.pid, second.pid
    # Usually the second claim finishes the run. But when the kill lands inside one of
    # the first worker's write transactions (a heartbeat, every 0.2 s), the server keeps
    # that transaction, and the write lock, until the dead stream expires (10 s, as in
    # sqld): the second worker's claim then waits that long and returns a lease already
    # expired locally, which it gives up before any step; a later claim finishes the run.
    final_gen = done.lease_generation
    assert done.status == "completed"
    assert final_gen >= 2
    assert done.output == {
        "n": 7,
        "results": [f"s1@{a}", f"s2@{b}", f"s3@{b}", f"s4@{b}"],
        "finished_by": b,
    }
    # s1 ran once (stored by the first worker, replayed by the second); s2 was in
    # progress when the first worker died and ran again; s3 and s4 ran once.
    assert [(e["step"], e["pid"], e["gen"]) for e in cluster.events("start")] == [
        ("s1", a, 1),
        ("s2", a, 1),
        ("s2", b, final_gen),
        ("s3", b, final_gen),
        ("s4", b, final_gen),
    ]
    assert [(s.name, s.lease_generation, s.output) for s in client.get_steps(run.id)] == [
        ("s1", 1, f"s1@{a}"),
        *((name, final_gen, f"{name}@{b}") for name in names[1:]),
    ]
    claims = cluster.claims(client)
    owners = {e["pid"]: e["owner"] for e in cluster.events("start")}
    assert [(c.new_generation, c.new_owner) for c in claims] == [
        (1, owners[a]),
        *((gen, owners[b]) for gen in range(2, final_gen + 1)),
    ]
    assert_claims_exclusive(claims, [done])
    # Nothing to report, but a heartbeat that found such a stillborn lease expired.
    assert [e for e in cluster.events("worker-error") if not _lease_loss(e)] == []
