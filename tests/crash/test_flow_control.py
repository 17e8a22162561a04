"""Three worker processes on one SQLite file keep a queue's concurrency and rate limits.

Every process declares the queue ``limited`` (2 runs at once) and ``metered``
(5 claims a second) and has 3 slots, so nine slots compete for runs the
limits allow far fewer of. The limits are counted by the claim in the
database, with no coordination between the processes: the runs' own record
of when they ran (the side-effect log) must show at most two ``limited`` runs
at any moment, and the claim times the database stored at most five
``metered`` claims in any one-second window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from durably import Durably, TriggerItem
from durably.models import Run

from .harness import Cluster, by_run, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LIMITED = 16
METERED = 15
RATE, WINDOW = 5, timedelta(seconds=1)


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def _all_completed(client: Durably, runs: list[Run]) -> bool:
    return all(getattr(client.get_run(run.id), "status", None) == "completed" for run in runs)


def _final(client: Durably, runs: list[Run]) -> list[Run]:
    found = [client.get_run(run.id) for run in runs]
    assert all(run is not None and run.started_at is not None for run in found)
    return [run for run in found if run is not None]


def test_three_worker_processes_keep_a_queues_concurrency_and_rate_limits(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(CRASH_FLOW="1", CRASH_SLOTS="3", CRASH_STEP_SLEEP="0.05,0.1")
    client = cluster.client()
    client.migrate()
    steps = client.get_job("steps")
    assert steps is not None
    workers = [cluster.start_worker(engine=engine) for engine in ("thread", "thread", "asyncio")]
    cluster.wait_for(
        lambda: len([w for w in client.get_workers() if not w.is_stale]) == 3,
        "three registered workers",
    )

    limited = steps.batch_trigger(
        [TriggerItem({"n": n, "steps": 3}, queue="limited") for n in range(LIMITED)]
    )
    metered = steps.batch_trigger(
        [TriggerItem({"n": n, "steps": 1}, queue="metered") for n in range(METERED)]
    )
    everything = limited + metered
    cluster.wait_for(lambda: _all_completed(client, everything), "every run completed")
    stop_all(workers)
    assert [w.process.returncode for w in workers] == [0, 0, 0], cluster.diagnostics()
    assert cluster.events("worker-error") == []

    # Concurrency: from the first step's start to the last step's end of each run,
    # as the processes that ran them recorded it.
    events = by_run(cluster.events("start", "end"))
    spans = [
        (min(e["t"] for e in events[run.id]), max(e["t"] for e in events[run.id]))
        for run in limited
    ]
    assert _most_at_once(spans) == 2  # never more; and the nine slots did fill the two places

    # Rate: the claim times the database stored (a run's started_at is its claim's).
    # (Which process claims is left to chance: a slot that ends a run claims its
    # next one in the same transaction, so one process may keep every place.)
    done = _final(client, metered)
    starts = sorted(run.started_at for run in done if run.started_at is not None)
    assert len(starts) == METERED
    for first, sixth in zip(starts, starts[RATE:], strict=False):
        assert sixth - first >= WINDOW, starts
