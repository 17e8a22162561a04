"""A worker process paused (SIGSTOP) while it holds a lease, resumed after another took over.

Worker A is frozen with SIGSTOP while it executes a run; worker B reclaims
the run once A's lease has expired and completes it; then A is thawed with
SIGCONT. Whatever A was doing, its late work must not count: the run's output
is B's, A's late step result and completion are refused, and A does not start
another step of the run. A then carries on as a healthy worker.

Where A is frozen:

``in-step``
    inside step s2 (the realistic case). On waking, A's lease is already past
    its local deadline, so A stops at the step boundary without even trying
    to write.
``before-step-write``
    after s2 returned and passed that check, while the step's result write
    waits for the database's write lock (held by another process). On waking,
    A's write reaches the database, and only the fencing token refuses it.
``before-completion``
    after the last step, in the job's own code, before it returns. On waking,
    A's completion reaches the database, and only the fencing token refuses it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest

from .harness import (
    Cluster,
    Worker,
    assert_claims_exclusive,
    lock_held,
    process_state,
    stop_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.both_engines, pytest.mark.timeout(180)]

SCENARIOS = {
    # where: (CRASH_BLOCK, A's settings)
    "in-step": ("s2", {}),
    # A's lease is longer, so that it surely passes the lease check before the
    # test freezes it in the write (the lock stops its heartbeat meanwhile).
    "before-step-write": ("s2", {"CRASH_STALE": "3", "CRASH_LOCK_TIMEOUT": "120"}),
    "before-completion": ("return", {}),
}


def _freeze(worker: Worker, cluster: Cluster) -> None:
    worker.signal(signal.SIGSTOP)
    cluster.wait_for(lambda: process_state(worker.pid) == "T", "the worker to be stopped")


def _of(events: list[dict[str, Any]], pid: int, run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["pid"] == pid and e.get("run") == run_id]


@pytest.mark.parametrize("where", list(SCENARIOS))
def test_a_paused_worker_cannot_write_late_after_its_run_was_reclaimed(
    make_cluster: Callable[..., Cluster], engine: str, where: str, driver: str
) -> None:
    if where == "before-step-write" and driver == "postgresql":
        pytest.skip(
            "SQLite only: the write is held behind SQLite's file lock; a PostgreSQL client "
            "frozen inside a write keeps its transaction, and its locks, open on the server"
        )
    block, a_settings = SCENARIOS[where]
    cluster = make_cluster(CRASH_BLOCK=block, CRASH_STALE="1", CRASH_HEARTBEAT="0.2")
    client = cluster.client()
    client.migrate()
    cluster.install_claim_audit(client)
    job = client.get_job("steps")
    assert job is not None
    run = job.trigger({"n": 1, "steps": 3})

    a = cluster.start_worker(engine=engine, env=a_settings)
    blocked = cluster.wait_for_event("blocked", run=run.id, point=block)
    assert blocked["pid"] == a.pid
    with ExitStack() as lock:
        if where == "before-step-write":
            lock.enter_context(lock_held(cluster.db_path))
            cluster.release()  # s2 returns; its result write waits for the lock
            cluster.wait_for_event("persist-begin", run=run.id, step="s2", pid=a.pid)
        _freeze(a, cluster)
    b = cluster.start_worker(engine=engine)
    done = client.wait_for_run(run.id, timeout=60)
    assert done.output["finished_by"] == b.pid

    cluster.release()
    a.signal(signal.SIGCONT)
    if where == "before-step-write":
        cluster.wait_for_event("persist", run=run.id, step="s2", pid=a.pid)
    else:
        cluster.wait_for_event("released", run=run.id, pid=a.pid)
    # Stop B, then give A a run of its own: once A finished it, A is surely done
    # with the contested one, and A is shown to be alive and well.
    stop_all([b])
    after = job.trigger({"n": 2, "steps": 1})
    assert client.wait_for_run(after.id, timeout=60).output["finished_by"] == a.pid
    stop_all([a])
    assert (a.process.returncode, b.process.returncode) == (0, 0)

    final = client.get_run(run.id)
    assert final is not None
    assert final == done, "nothing A did after waking changed the run"
    assert final.lease_generation == 2
    events = cluster.events()
    by_a, by_b = _of(events, a.pid, run.id), _of(events, b.pid, run.id)

    # Whose work was kept: A's steps stored before the pause, B's after.
    stored = [(s.name, s.lease_generation, s.output) for s in client.get_steps(run.id)]
    if where == "before-completion":  # A finished every step; B only replayed them
        assert stored == [(f"s{i}", 1, f"s{i}@{a.pid}") for i in (1, 2, 3)]
        assert [e for e in by_b if e["event"] == "start"] == []
    else:  # A was inside s2: B ran s2 and s3
        assert stored == [
            ("s1", 1, f"s1@{a.pid}"),
            ("s2", 2, f"s2@{b.pid}"),
            ("s3", 2, f"s3@{b.pid}"),
        ]
    assert done.output["results"] == [output for _name, _gen, output in stored]

    # A never started another step after waking, and none of its late writes counted.
    assert [e["step"] for e in by_a if e["event"] == "start"] == (
        ["s1", "s2", "s3"] if where == "before-completion" else ["s1", "s2"]
    )
    a_writes = [
        (e["event"], e.get("step"), e["ok"]) for e in by_a if e["event"] in ("persist", "complete")
    ]
    if where in ("in-step", "before-step-write"):
        # Past its local deadline the step's result still goes to the database,
        # which refuses it: the run was reclaimed (the fence decides, not the clock).
        assert a_writes == [("persist", "s1", True), ("persist", "s2", False)]
    else:  # the completion reached the database: fenced
        assert a_writes == [
            ("persist", "s1", True),
            ("persist", "s2", True),
            ("persist", "s3", True),
            ("complete", None, False),
        ]
        errors = [e["context"] for e in by_a if e["event"] == "worker-error"]
        assert "run-completion" in errors
    assert_claims_exclusive(cluster.claims(client), [final])
