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

Its sizes can be raised through the environment (tests/README.md); issue 36's
acceptance run, four workers through 300 runs with a kill every second, is
``DURABLY_KILL_LOOP_RUNS=300 DURABLY_KILL_LOOP_WORKERS=4 DURABLY_KILL_LOOP_KILLS=100000
DURABLY_KILL_LOOP_EVERY=1,1``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest

from durably import Durably

from .harness import (
    WAIT,
    Cluster,
    Worker,
    assert_nothing_lost_and_no_stored_step_rerun,
    query,
    stop_all,
    trigger_mixed,
)

RUNS = int(os.environ.get("DURABLY_KILL_LOOP_RUNS", "50"))
STEPS = ("s1", "s2", "s3", "s4")
WORKERS = int(os.environ.get("DURABLY_KILL_LOOP_WORKERS", "3"))
KILLS = int(os.environ.get("DURABLY_KILL_LOOP_KILLS", "12"))
"""At most this many kills; the loop also ends once every run completed."""
EVERY = tuple(float(s) for s in os.environ.get("DURABLY_KILL_LOOP_EVERY", "0.1,0.5").split(","))
"""Seconds between kills: drawn uniformly between the two values."""
SCALE = max(1.0, RUNS / 50)
"""How much longer than the default size's the waits and the timeout may be."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300 * SCALE)]


def _completed(client: Durably) -> int:
    rows = query(client, "SELECT count(*) FROM durably_runs WHERE status = 'completed'")
    return int(rows[0][0])


def test_workers_killed_at_random_moments_lose_nothing_and_rerun_no_completed_step(
    make_cluster: Callable[..., Cluster],
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # A run may be in the worker killed again and again (a replacement claims the oldest
    # stale run first); failing it after max_recoveries is test_poison's subject, not this one's.
    cluster = make_cluster(
        CRASH_STEP_SLEEP="0.03,0.15",
        CRASH_STALE="1",
        CRASH_HEARTBEAT="0.2",
        CRASH_MAX_RECOVERIES=str(KILLS + 1),
    )
    client = cluster.client()
    client.migrate()
    cluster.install_claim_audit(client)
    runs = trigger_mixed(client, RUNS, len(STEPS), chunk=5)

    def start() -> Worker:
        return cluster.start_worker(engine=rng.choice(("thread", "asyncio")))

    workers: list[Worker] = [start() for _ in range(WORKERS)]
    killed: set[int] = set()
    give_up = time.monotonic() + WAIT * 2 * SCALE
    while len(killed) < KILLS and _completed(client) < RUNS and time.monotonic() < give_up:
        time.sleep(rng.uniform(*EVERY))
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

    cluster.wait_for(
        lambda: _completed(client) == RUNS, f"every run completed (seed {seed})", WAIT * SCALE
    )
    stop_all(workers)
    context = f"seed {seed}, killed pids {sorted(killed)}"

    done, unfinished = assert_nothing_lost_and_no_stored_step_rerun(
        cluster, client, runs, STEPS, context
    )

    # The test did what it says: workers died inside steps and their runs were taken over.
    assert len(killed) >= 1, context
    assert unfinished, f"no kill landed inside a step ({context})"
    assert sum(r.lease_generation > 1 for r in done.values()) >= 1
