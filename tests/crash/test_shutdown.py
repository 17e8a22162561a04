"""SIGTERM to a worker process: it stops claiming, nothing is half-written, no run is lost.

The policy of ``durably worker`` (durably/cli/worker.py, ``ThreadWorker.stop``):

* by default it lets the in-flight run finish, however long that takes, and
  claims nothing more;
* with ``--shutdown-timeout T`` it waits ``T`` seconds, then asks the run to
  stop at its next step boundary; a run still inside a step a moment later is
  handed back (pending at once, for another worker to resume from its
  completed steps) and the process exits, about ``T`` seconds after the
  signal. The step in flight runs again elsewhere; had it returned while the
  lease was still held, its result would have been kept.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from .harness import Cluster, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.both_engines, pytest.mark.timeout(180)]

SHUTDOWN_TIMEOUT = 1.0
SIGNAL_HANDLED = 2.0
"""Seconds left for the worker to handle SIGTERM before the test lets its step go on."""


def test_sigterm_lets_the_in_flight_run_finish_and_claims_nothing_more(
    make_cluster: Callable[..., Cluster],
    engine: str,
) -> None:
    cluster = make_cluster(CRASH_BLOCK="s2")
    client = cluster.client()
    client.migrate()
    job = client.get_job("steps")
    assert job is not None
    first = cluster.start_worker(engine=engine)
    run = job.trigger({"n": 1, "steps": 4})
    cluster.wait_for_event("blocked", run=run.id, pid=first.pid)
    waiting = job.trigger({"n": 2, "steps": 1})  # the worker's only slot is busy

    first.signal(signal.SIGTERM)
    time.sleep(SIGNAL_HANDLED)
    assert first.alive(), "the worker waits for its in-flight run"
    cluster.release()
    assert first.wait() == 0
    assert [w.id for w in client.get_workers()] == [], "it deregistered on its way out"

    done = client.get_run(run.id)
    assert done is not None
    assert done.status == "completed"
    assert done.output["finished_by"] == first.pid
    assert done.lease_generation == 1
    starts = Counter(e["step"] for e in cluster.events("start") if e["run"] == run.id)
    assert starts == {"s1": 1, "s2": 1, "s3": 1, "s4": 1}
    untouched = client.get_run(waiting.id)
    assert untouched is not None
    assert (untouched.status, untouched.lease_generation) == ("pending", 0), (
        "a stopping worker claims nothing"
    )

    second = cluster.start_worker(engine=engine)
    assert client.wait_for_run(waiting.id, timeout=60).output["finished_by"] == second.pid
    stop_all([second])
    assert second.process.returncode == 0


@pytest.mark.alone
def test_sigterm_with_a_shutdown_timeout_exits_in_time_and_hands_the_run_back(
    make_cluster: Callable[..., Cluster],
    engine: str,
) -> None:
    # A lease far longer than the test waits: the second worker can only take the
    # run over because the first one handed it back, not because it expired.
    cluster = make_cluster(CRASH_BLOCK="s2", CRASH_STALE="300", CRASH_HEARTBEAT="0.2")
    client = cluster.client()
    client.migrate()
    job = client.get_job("steps")
    assert job is not None
    first = cluster.start_worker("--shutdown-timeout", str(SHUTDOWN_TIMEOUT), engine=engine)
    run = job.trigger({"n": 1, "steps": 4})
    cluster.wait_for_event("blocked", run=run.id, pid=first.pid)

    signalled = time.monotonic()
    first.signal(signal.SIGTERM)
    # s2 never returns while the worker waits: it is handed back, and the
    # process exits without waiting for it.
    assert first.wait() == 0
    assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT + 1.0, "bounded by the timeout"
    assert [w.id for w in client.get_workers()] == []

    handed_back = client.get_run(run.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.lease_owner) == ("pending", None)
    assert (handed_back.error, handed_back.recovery_count) == (None, 0)
    # Nothing half-written: s1's result is stored; s2 was cut off (neither
    # completed nor failed), and s3 never started.
    assert [(s.name, s.status, s.lease_generation) for s in client.get_steps(run.id)] == [
        ("s1", "completed", 1)
    ]
    assert [(a.step_name, a.status) for a in client.get_step_attempts(run.id)] == [
        ("s1", "completed"),
        ("s2", "interrupted"),
    ]
    first_events = [e for e in cluster.events() if e["pid"] == first.pid]
    assert [(e["event"], e.get("step")) for e in first_events if e["event"] != "persist-begin"][
        :5
    ] == [("start", "s1"), ("end", "s1"), ("persist", "s1"), ("start", "s2"), ("blocked", None)]
    assert ("end", "s2") not in [(e["event"], e.get("step")) for e in first_events]

    cluster.release()
    second = cluster.start_worker(engine=engine)
    done = client.wait_for_run(run.id, timeout=60)
    stop_all([second])
    assert second.process.returncode == 0
    assert done.output == {
        "n": 1,
        "results": [f"s1@{first.pid}", *(f"s{i}@{second.pid}" for i in (2, 3, 4))],
        "finished_by": second.pid,
    }
    assert [(s.name, s.lease_generation) for s in client.get_steps(run.id)] == [
        ("s1", 1),
        ("s2", 2),
        ("s3", 2),
        ("s4", 2),
    ]
    starts = Counter(e["step"] for e in cluster.events("start") if e["run"] == run.id)
    assert starts == {"s1": 1, "s2": 2, "s3": 1, "s4": 1}, "only the step in flight ran again"
