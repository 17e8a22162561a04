"""kill -9 worker processes at random moments, again and again: nothing lost, nothing re-run.

Three worker processes (each started on the thread or the asyncio engine, at
random) work through 50 runs of a four-step job (half ``def``, half ``async
def``) whose steps take a little while, and the test keeps SIGKILLing a random
one of them at a random moment and starting a replacement. Afterwards, from the database and
the side-effect log:

* every run completed, with the step results that were stored;
* no completed step ran again: a step whose result was stored by claim ``g``
  of a run was never started by a later claim;
* only the step in progress when a worker died may run twice: each claim that
  did not finish its run started at most one step whose result it did not store;
* no claim ever took a lease that was still live (the database's claim audit).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from durably import Durably

from .harness import WAIT, Cluster, Worker, assert_claims_exclusive, query, stop_all, trigger_mixed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = 50
STEPS = ("s1", "s2", "s3", "s4")
WORKERS = 3
KILLS = 12


def _completed(client: Durably) -> int:
    rows = query(client, "SELECT count(*) FROM durably_runs WHERE status = 'completed'")
    return int(rows[0][0])


def test_workers_killed_at_random_moments_lose_nothing_and_rerun_no_completed_step(
    make_cluster: Callable[..., Cluster],
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    cluster = make_cluster(CRASH_STEP_SLEEP="0.03,0.15", CRASH_STALE="1", CRASH_HEARTBEAT="0.2")
    client = cluster.client()
    client.migrate()
    cluster.install_claim_audit(client)
    runs = trigger_mixed(client, RUNS, len(STEPS), chunk=5)

    def start() -> Worker:
        return cluster.start_worker(engine=rng.choice(("thread", "asyncio")))

    workers: list[Worker] = [start() for _ in range(WORKERS)]
    killed: set[int] = set()
    give_up = time.monotonic() + WAIT * 2
    while len(killed) < KILLS and _completed(client) < RUNS and time.monotonic() < give_up:
        time.sleep(rng.uniform(0.1, 0.5))
        # Only a worker that is already executing steps is worth killing (one still
        # importing would die before doing anything, on a slow machine every time).
        working = {e["pid"] for e in cluster.events("start")}
        ready = [slot for slot in range(WORKERS) if workers[slot].pid in working]
        if not ready:
            continue
        slot = rng.choice(ready)
        workers[slot].signal(signal.SIGKILL)
        workers[slot].wait()
        killed.add(workers[slot].pid)
        workers[slot] = start()

    cluster.wait_for(lambda: _completed(client) == RUNS, f"every run completed (seed {seed})")
    stop_all(workers)
    context = f"seed {seed}, killed pids {sorted(killed)}"

    done = {run.id: client.get_run(run.id) for run in runs}
    stored: dict[tuple[str, str], tuple[int, Any]] = {}
    for run in runs:
        for step in client.get_steps(run.id):
            assert step.status == "completed", (step, context)
            assert (run.id, step.name) not in stored, f"{step.name} stored twice ({context})"
            stored[run.id, step.name] = (step.lease_generation, step.output)
    assert set(stored) == {(run.id, name) for run in runs for name in STEPS}, context

    starts = cluster.events("start")
    executions: Counter[tuple[str, str, int]] = Counter(
        (e["run"], e["step"], e["gen"]) for e in starts
    )
    unfinished: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (run_id, name, gen), count in executions.items():
        stored_by, _output = stored[run_id, name]
        assert count == 1, f"{name} started {count} times by one claim ({context})"
        assert gen <= stored_by, (
            f"run {run_id}: {name} was stored by claim {stored_by} and run again by "
            f"claim {gen} ({context})"
        )
        if gen < stored_by:
            unfinished[run_id, gen].append(name)
    for (run_id, name), (stored_by, output) in stored.items():
        assert executions[run_id, name, stored_by] == 1, (run_id, name, context)
        # The value the run finished with is the one stored, computed by that execution.
        (execution,) = [
            e for e in starts if (e["run"], e["step"], e["gen"]) == (run_id, name, stored_by)
        ]
        assert output == f"{name}@{execution['pid']}", context
        final = done[run_id]
        assert final is not None
        assert final.output["results"][STEPS.index(name)] == output, context
    for (run_id, gen), names in unfinished.items():
        # Interrupted by a kill, or (on a starved machine) by a lease lost meanwhile.
        assert len(names) == 1, (
            f"run {run_id}: claim {gen} left {names} unstored; only the step in progress "
            f"when it was interrupted may be ({context})"
        )

    for run in runs:
        final = done[run.id]
        assert final is not None
        assert final.status == "completed", context
        assert final.output["n"] == run.input["n"]
        assert [r.split("@")[0] for r in final.output["results"]] == list(STEPS)
    assert_claims_exclusive(cluster.claims(client), [r for r in done.values() if r is not None])

    # The test did what it says: workers died inside steps and their runs were taken over.
    assert len(killed) >= 1, context
    assert unfinished, f"no kill landed inside a step ({context})"
    assert sum(r.lease_generation > 1 for r in done.values() if r is not None) >= 1
