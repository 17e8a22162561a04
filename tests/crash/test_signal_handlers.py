"""SIGTERM to a plain script that called ``durably.install_signal_handlers()``.

Without the handlers, SIGTERM ends a script (or ``flask run``) on the spot:
its run stays leased until the lease expires and its worker row stays. With
them, the engine is stopped first (in-flight runs get the timeout, then are
handed back; the worker deregisters) and the process then exits as the signal
would have ended it, through ``SystemExit`` so that ``atexit`` runs, or
through the handler that was installed before.

The script is :mod:`tests.crash.signalled`; its run is inside step s2, a
long step that returns once it has been told to stop (``step.cancelled``),
which the stop does when its timeout has passed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from durably import Durably

from .harness import ROOT, Cluster, Worker

pytestmark = [pytest.mark.slow, pytest.mark.both_engines, pytest.mark.timeout(180)]

STOP_TIMEOUT = 1.0
"""The timeout the script passes to ``install_signal_handlers``."""
EXIT_DEADLINE = 30.0
"""Seconds the test waits for the process to exit: far more than the timeout, far
less than a step that is never let go would take (tests.crash.jobs.BLOCK_LIMIT)."""


def start_script(cluster: Cluster, engine: str, *args: str) -> Worker:
    """``python -m tests.crash.signalled ENGINE STOP_TIMEOUT ARGS...``, killed at teardown."""
    output = cluster.dir / f"script-{len(cluster.workers)}.out"
    command = [sys.executable, "-m", "tests.crash.signalled", engine, str(STOP_TIMEOUT), *args]
    with output.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=cluster.env, stdout=out, stderr=subprocess.STDOUT
        )
    script = Worker(process, output)
    cluster.workers.append(script)
    return script


def run_blocked_in_a_step(
    make_cluster: Callable[..., Cluster], engine: str, *args: str
) -> tuple[Cluster, Durably, Worker, str]:
    """A script whose engine is inside step s2 of a run; the run's id."""
    # A lease far longer than the test: the run can only stop being this
    # worker's because the worker let it go.
    cluster = make_cluster(CRASH_BLOCK="s2", CRASH_STALE="300", CRASH_HEARTBEAT="0.2")
    client = cluster.client()
    client.migrate()
    script = start_script(cluster, engine, *args)
    ready = cluster.wait_for_event("ready", pid=script.pid)
    assert [w.id for w in client.get_workers()] == [ready["worker"]]
    job = client.get_job("steps")
    assert job is not None
    run = job.trigger({"n": 1, "steps": 4})
    cluster.wait_for_event("blocked", run=run.id, pid=script.pid)
    return cluster, client, script, run.id


def sigterm(cluster: Cluster, script: Worker) -> int:
    """SIGTERM the script, let its step go once it was told to stop; its exit status."""
    script.signal(signal.SIGTERM)
    cluster.wait_for(
        lambda: not script.alive() or cluster.events("abort-seen"),
        "the stop to tell the run to stop, after its timeout",
    )
    cluster.release()
    return script.wait(EXIT_DEADLINE)


def assert_stopped_and_let_go(
    cluster: Cluster, client: Durably, script: Worker, run_id: str
) -> None:
    """The worker deregistered, and its run is neither finished nor still held by it."""
    assert client.get_workers() == [], "the worker row is gone"
    run = client.get_run(run_id)
    assert run is not None
    assert run.status not in ("completed", "failed"), run
    assert run.error is None
    # Handed back: pending, or leased with its lease released (expired); never
    # left held by the stopped worker.
    if run.status != "pending":
        assert run.status == "leased", run
        assert run.lease_expires_at is not None
        assert run.lease_expires_at <= datetime.now(timezone.utc), "released"
    # The run stopped at a step boundary: s3 never started.
    steps = [(s.name, s.status) for s in client.get_steps(run_id)]
    assert steps[0] == ("s1", "completed")
    assert "s3" not in [name for name, _status in steps]
    assert cluster.events("atexit"), f"atexit ran\n{script.text()}"


def test_sigterm_stops_the_engine_then_exits_like_sigterm(
    make_cluster: Callable[..., Cluster], engine: str
) -> None:
    cluster, client, script, run_id = run_blocked_in_a_step(make_cluster, engine)

    status = sigterm(cluster, script)

    assert status == 128 + signal.SIGTERM, script.text()
    assert_stopped_and_let_go(cluster, client, script, run_id)
    if engine == "asyncio":
        assert cluster.events("finally"), "asyncio.run() unwound the main coroutine"


def test_sigterm_stops_the_engine_then_calls_the_previous_handler(
    make_cluster: Callable[..., Cluster], engine: str
) -> None:
    cluster, client, script, run_id = run_blocked_in_a_step(
        make_cluster, engine, "--previous-handler"
    )

    status = sigterm(cluster, script)

    assert status == 0, script.text()  # the previous handler's sys.exit(0)
    (called,) = cluster.events("previous-handler")
    assert (called["signum"], called["engine_running"]) == (signal.SIGTERM, False)
    assert_stopped_and_let_go(cluster, client, script, run_id)
