"""Issue 29, item 1: leases must hold while the host application writes to the same file.

The host application keeps its own data in durably's SQLite file: another
process (``host_writer.py``, the stdlib ``sqlite3``) loops ``BEGIN IMMEDIATE;
sleep 0.3 s; COMMIT; sleep 0.05 s`` on a table of its own, so the write lock
is free only 50 ms at a time. Meanwhile:

* two worker processes (lease 1 s, heartbeat every 0.2 s, two slots each)
  run two runs of a job of three 3 s steps (a blocking ``time.sleep``). The
  lock is never held for long, so a lease must never lapse: every step runs
  exactly once, each run is claimed once, and both runs complete within 60 s;
* ``migrate()`` of a database whose schema is current, and a worker's
  ``start()``, each take under 2 s.

Both time limits are the issue's own requirements, which is why these tests
time anything (the suite's rule is no timed assertions). Each run takes 9 s
of steps at best; the 60 s, counted from the trigger, leave room for a slow
machine: runs whose leases keep lapsing restart their steps over and over
and may never finish. The 2 s bound is measured around the one call, with
``time.monotonic``, several times; the host holds the lock for 0.3 s at a
time, so a call that waits for it properly takes a few tenths at most.

What makes it hold: durably waits for a locked file in Python, in steps of
at most 10 ms (so it catches the host's 50 ms gaps), and a renewal that
comes late is accepted while nobody else has claimed the run (the fence,
not the clock, decides); past its local deadline a run confirms its lease
before its next step instead of throwing its work away.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from durably import Durably
from durably.models import Run

from .harness import (
    WAIT,
    Cluster,
    assert_every_step_ran_once_under_one_lease,
    query,
    stop_all,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

HOST_WRITER = Path(__file__).with_name("host_writer.py")
POLL, HEARTBEAT, STALE, SLOTS = 0.05, 0.2, 1.0, 2
"""The workers' settings: polling interval, heartbeat interval, stale threshold (the
lease), slots (``max_concurrent_runs``)."""
WORKER_ENV = {
    "CRASH_POLL": str(POLL),
    "CRASH_HEARTBEAT": str(HEARTBEAT),
    "CRASH_STALE": str(STALE),
    "CRASH_SLOTS": str(SLOTS),
    "CRASH_STEP_SLEEP": "3,3",  # every step: time.sleep(3)
}
STEPS = ("s1", "s2", "s3")
RUNS = 2
WORKERS = 2
COMPLETION_DEADLINE = 60.0
"""Seconds both runs may take, from their trigger to their completion (issue 29.1)."""
START_BOUND = 2.0
"""Seconds ``migrate()`` and a worker's start may each take (issue 29.1)."""
REPEATS = 5
"""Times ``migrate()`` and a start are measured: each must be under the bound, every time."""


class HostWriter:
    """The host application's writer process (``host_writer.py``)."""

    def __init__(self, process: subprocess.Popen[str], errors: Path) -> None:
        self.process = process
        self.errors = errors

    def alive(self) -> bool:
        return self.process.poll() is None

    def describe(self, client: Durably) -> str:
        """How many transactions it committed and the longest it waited for the lock."""
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        ((count, waited),) = query(client, "SELECT count(*), max(waited) FROM host_data")
        stderr = self.errors.read_text(errors="replace")[-2000:]
        return (
            f"host writer {state}: {count} transactions, longest wait for the lock "
            f"{waited or 0:.2f}s" + (f"\n{stderr}" if stderr else "")
        )


@pytest.fixture
def host_writer(tmp_path: Path) -> Iterator[Callable[[Path], HostWriter]]:
    """Start the host's writer on a database file (after durably set WAL mode on it);
    every writer is killed at teardown, whatever happened."""
    started: list[subprocess.Popen[str]] = []

    def start(db_path: Path) -> HostWriter:
        errors = tmp_path / f"host-writer-{len(started)}.err"
        with errors.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(HOST_WRITER), str(db_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        started.append(process)
        assert process.stdout is not None
        said = process.stdout.readline().strip()  # its table is committed: it writes now
        assert said == "writing wal", (
            f"the host writer said {said!r}, not 'writing wal': {errors.read_text()}"
        )
        return HostWriter(process, errors)

    yield start
    for process in started:
        process.kill()
        process.wait()


def _app(url: str) -> Durably:
    """A new ``Durably`` with the workers' settings, as the application makes at start-up."""
    return Durably(
        url,
        polling_interval=POLL,
        heartbeat_interval=HEARTBEAT,
        stale_threshold=STALE,
        max_concurrent_runs=SLOTS,
    )


def _registered(client: Durably) -> int:
    return len([w for w in client.get_workers() if not w.is_stale])


def _completed(client: Durably, runs: Sequence[Run]) -> int:
    ids = {run.id for run in runs}
    return len([r for r in client.get_runs(limit=None) if r.id in ids and r.status == "completed"])


def _what_happened(cluster: Cluster, client: Durably, runs: Sequence[Run]) -> str:
    """Step executions, claims, refused writes and worker errors: why a lease was lost."""
    names = {run.id: f"run {n}" for n, run in enumerate(runs)}
    executions = Counter((e["run"], e["step"]) for e in cluster.events("start"))
    lines = [
        "step executions: "
        + ", ".join(
            f"{names[run.id]} {step} x{executions[run.id, step]}" for run in runs for step in STEPS
        )
    ]
    for claim in cluster.claims(client):
        if claim.old_expires is None:
            how = f"from {claim.old_status}"
        else:  # the lease it replaced was last renewed at old_expires - stale_threshold
            late = (claim.claimed_at - claim.old_expires) / 1000
            how = f"from {claim.old_status}, {late:+.2f}s after the previous lease expired"
        lines.append(
            f"claim: {names.get(claim.run_id, claim.run_id)} generation "
            f"{claim.new_generation} by {claim.new_owner} ({how})"
        )
    refused = Counter(
        (e["event"], e.get("step")) for e in cluster.events("persist", "complete") if not e["ok"]
    )
    lines.append(f"refused or failed writes: {dict(refused)}")
    errors = Counter(
        (e["context"], e["type"], e["error"][:100]) for e in cluster.events("worker-error")
    )
    lines += [f"worker:error x{n}: {error}" for error, n in errors.most_common()]
    return "\n".join(lines)


def test_two_workers_run_every_step_once_while_the_host_writes_to_the_file(
    make_cluster: Callable[..., Cluster], host_writer: Callable[[Path], HostWriter]
) -> None:
    cluster = make_cluster(**WORKER_ENV)
    client = cluster.client()
    client.migrate()  # sets the file's WAL mode, before the host's writer opens it
    cluster.install_claim_audit(client)
    writer = host_writer(cluster.db_path)

    workers = [cluster.start_worker() for _ in range(WORKERS)]
    cluster.wait_for(lambda: _registered(client) == WORKERS, "two registered workers")
    job = client.get_job("steps")
    assert job is not None
    runs = job.batch_trigger([{"n": n, "steps": len(STEPS)} for n in range(RUNS)])
    try:
        cluster.wait_for(
            lambda: _completed(client, runs) == RUNS, "both runs completed", COMPLETION_DEADLINE
        )
        late = ""
    except AssertionError as timeout:  # reported after the step counts, the root cause
        late = str(timeout)
    if late:
        for worker in workers:
            worker.kill()  # nothing more may start: the counts below are final
    else:
        stop_all(workers)
    happened = _what_happened(cluster, client, runs)
    host = writer.describe(client)

    executions = Counter((e["run"], e["step"]) for e in cluster.events("start"))
    assert executions == {(run.id, step): 1 for run in runs for step in STEPS}, (
        f"a step ran more than once: a lease was lost while the host wrote\n{happened}\n{host}"
    )
    assert not late, f"the runs did not complete within {COMPLETION_DEADLINE:g}s\n{late}"
    assert_every_step_ran_once_under_one_lease(cluster, client, runs, STEPS)
    # The host wrote all along: the contention was there from start to finish.
    assert writer.alive(), host


def test_migrate_and_worker_start_take_under_2s_while_the_host_writes_to_the_file(
    make_cluster: Callable[..., Cluster], host_writer: Callable[[Path], HostWriter]
) -> None:
    cluster = make_cluster()
    client = cluster.client()
    client.migrate()  # the schema is current: migrate() below has nothing to do
    writer = host_writer(cluster.db_path)

    migrations: list[float] = []
    starts: list[float] = []
    for _ in range(REPEATS):
        # As an application starts: a new instance (new connections) migrates...
        with _app(cluster.db_url) as app:
            began = time.monotonic()
            app.migrate()
            migrations.append(time.monotonic() - began)
        # ...and one starts its worker (which checks the schema, then registers).
        with _app(cluster.db_url) as app:
            began = time.monotonic()
            app.start()
            starts.append(time.monotonic() - began)
            assert app.worker_id in {w.id for w in client.get_workers()}, "start() registers"
            app.stop(WAIT)

    host = writer.describe(client)
    timings = (
        f"migrate(): {', '.join(f'{t:.2f}s' for t in migrations)}; "
        f"start(): {', '.join(f'{t:.2f}s' for t in starts)}\n{host}"
    )
    assert max(migrations) < START_BOUND, f"migrate() took too long: {timings}"
    assert max(starts) < START_BOUND, f"a worker's start() took too long: {timings}"
    assert writer.alive(), host
