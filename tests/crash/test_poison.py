"""A poison run: its step kills every worker process that runs it.

Without a limit every worker in turn would claim it after its lease expired
and die. With ``max_recoveries`` (here 2) the run is failed instead of being
claimed a third time after a lost lease: the worker that would have run it
fails it, says why, and stays up for the rest of the queue.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import WAIT, Cluster, stop_all, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.both_engines, pytest.mark.timeout(180)]

MAX_RECOVERIES = 2


def test_a_run_that_kills_its_worker_fails_after_max_recoveries(
    make_cluster: Callable[..., Cluster], engine: str
) -> None:
    cluster = make_cluster(CRASH_MAX_RECOVERIES=str(MAX_RECOVERIES), CRASH_STALE="1.0")
    client = cluster.client()
    client.migrate()
    poison = client.job("poison")(lambda step, input: None)  # the workers run it
    steps = client.get_job("steps")
    assert steps is not None
    run = poison.trigger({})

    crashed = []
    for _ in range(1 + MAX_RECOVERIES):  # the first claim, then every recovery allowed
        worker = cluster.start_worker(engine=engine)
        assert worker.wait() == 17, worker.text()
        crashed.append(worker.pid)
        current = client.get_run(run.id)
        assert current is not None
        assert current.status == "leased"

    survivor = cluster.start_worker(engine=engine)
    wait_for(
        lambda: getattr(client.get_run(run.id), "status", None) == "failed",
        "the poison run to fail",
        WAIT,
    )
    failed = client.get_run(run.id)
    assert failed is not None
    assert failed.error is not None
    assert "recover" in failed.error
    assert failed.recovery_count == MAX_RECOVERIES + 1
    assert [r.id for r in client.get_failed_runs()] == [run.id]
    explosions = [e["pid"] for e in cluster.events("start") if e["run"] == run.id]
    assert explosions == crashed, "the survivor failed the run without running it"

    healthy = steps.trigger({"n": 1, "steps": 1})
    assert client.wait_for_run(healthy.id, timeout=WAIT).output["finished_by"] == survivor.pid
    stop_all([survivor])
    assert survivor.process.returncode == 0
