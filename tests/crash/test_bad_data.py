"""Runs that cannot be executed fail with a clear error; the worker process carries on.

tests/behaviour/test_worker.py covers a corrupted input in-process; this runs
it, and a stored step result that cannot be decoded, through a real worker
process, mixed with healthy runs in one queue, with a run of a job the worker
does not know (which it leaves pending, for a worker that knows the job). The bad rows are
written before the worker starts, through the client (same driver).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from durably import Durably
from durably.clock import now_ms
from durably.schema import runs as runs_table
from durably.schema import steps as steps_table

from .harness import Cluster, write

pytestmark = [pytest.mark.slow, pytest.mark.both_engines, pytest.mark.timeout(180)]


def _corrupt_input(client: Durably, run_id: str) -> None:
    write(
        client,
        lambda conn: conn.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(input="{not json")
        ),
    )


def _store_undecodable_step(client: Durably, run_id: str) -> None:
    """As if an earlier claim had completed s1, and its stored result were damaged."""

    def store(conn: sa.Connection) -> None:
        now = now_ms()
        conn.execute(
            steps_table.insert().values(
                run_id=run_id,
                name="s1",
                step_index=0,
                status="completed",
                output='{"truncated',
                lease_generation=1,
                started_at=now,
                completed_at=now,
            )
        )
        conn.execute(
            runs_table.update()
            .where(runs_table.c.id == run_id)
            .values(completed_step_count=1, current_step_index=1, lease_generation=1)
        )

    write(client, store)


def test_bad_runs_fail_clearly_and_the_worker_process_carries_on(
    make_cluster: Callable[..., Cluster],
    engine: str,
) -> None:
    cluster = make_cluster()
    client = cluster.client()
    client.migrate()
    steps = client.get_job("steps")
    assert steps is not None
    retired = client.job("retired-job")(lambda step, input: None)  # not in the worker's app

    good: list[Any] = []
    good.append(steps.trigger({"n": 0, "steps": 2}))
    bad_input = steps.trigger({"n": 1, "steps": 2})
    _corrupt_input(client, bad_input.id)
    good.append(steps.trigger({"n": 2, "steps": 2}))
    unknown = retired.trigger({"n": 3})
    good.append(steps.trigger({"n": 4, "steps": 2}))
    bad_step = steps.trigger({"n": 5, "steps": 2})
    _store_undecodable_step(client, bad_step.id)
    good.append(steps.trigger({"n": 6, "steps": 2}))

    worker = cluster.start_worker(engine=engine)
    for run in good:
        assert client.wait_for_run(run.id, timeout=60).output["finished_by"] == worker.pid

    def failed(run_id: str) -> str:
        cluster.wait_for(
            lambda: client.get_run(run_id).status == "failed",  # type: ignore[union-attr]
            f"run {run_id} to fail",
        )
        run = client.get_run(run_id)
        assert run is not None
        assert run.error is not None
        return run.error

    assert "input" in failed(bad_input.id).lower()
    assert "json" in failed(bad_input.id).lower()
    error = failed(bad_step.id)
    assert "s1" in error
    assert "cannot be decoded" in error

    unknown_now = client.get_run(unknown.id)
    assert unknown_now is not None
    assert (unknown_now.status, unknown_now.lease_owner) == ("pending", None)

    # Neither the damaged step nor anything after it ran; no bad run was executed at all.
    bad = {bad_input.id, unknown.id, bad_step.id}
    assert [e for e in cluster.events("start") if e["run"] in bad] == []
    errors = [e for e in cluster.events("worker-error") if "lost ownership" not in e["error"]]
    assert errors == [], "bad runs are the runs' problem, not the worker's"

    # One more healthy run after all that, then a clean exit.
    last = steps.trigger({"n": 7, "steps": 2})
    assert client.wait_for_run(last.id, timeout=60).output["finished_by"] == worker.pid
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
