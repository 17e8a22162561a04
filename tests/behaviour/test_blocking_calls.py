"""Blocking API calls made on a loop that runs durably's jobs raise ``BlockingCallError``.

On the asyncio engine's loop, ``trigger_and_wait()`` would wait for a run
that only that loop can execute: it used to hang until its timeout (forever
without one). Every blocking method now refuses at once there, and in an
``async def`` job (durably's own loop, on the thread engine), naming its
``_async`` twin. Called from a thread, or from any other loop, they work as
before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from durably import (
    AsyncStepContext,
    BlockingCallError,
    ConflictError,
    Durably,
    Job,
    RunFailedError,
    RunStatus,
)

WAIT = 10.0
"""Seconds a wait may take before the test fails (reached only on failure)."""

Call = Callable[[Durably, Job[Any, Any], str], object]

CALLS: dict[str, Call] = {
    "trigger_and_wait": lambda d, job, run_id: job.trigger_and_wait(2, timeout=WAIT),
    "trigger": lambda d, job, run_id: job.trigger(2),
    "batch_trigger": lambda d, job, run_id: job.batch_trigger([2, 3]),
    "get_run": lambda d, job, run_id: d.get_run(run_id),
    "Job.get_run": lambda d, job, run_id: job.get_run(run_id),
    "get_runs": lambda d, job, run_id: d.get_runs(),
    "Job.get_runs": lambda d, job, run_id: job.get_runs(),
    "get_failed_runs": lambda d, job, run_id: d.get_failed_runs(),
    "get_steps": lambda d, job, run_id: d.get_steps(run_id),
    "get_step_attempts": lambda d, job, run_id: d.get_step_attempts(run_id),
    "get_logs": lambda d, job, run_id: d.get_logs(run_id),
    "get_queue_stats": lambda d, job, run_id: d.get_queue_stats(),
    "get_workers": lambda d, job, run_id: d.get_workers(),
    "wait_for_run": lambda d, job, run_id: d.wait_for_run(run_id, timeout=WAIT),
    "cancel": lambda d, job, run_id: d.cancel(run_id),
    "retry": lambda d, job, run_id: d.retry(run_id),
    "retrigger": lambda d, job, run_id: d.retrigger(run_id),
    "delete_run": lambda d, job, run_id: d.delete_run(run_id),
    "purge_runs": lambda d, job, run_id: d.purge_runs(datetime.now(timezone.utc)),
    "process_one": lambda d, job, run_id: d.process_one(),
    "process_until_idle": lambda d, job, run_id: d.process_until_idle(),
    "migrate": lambda d, job, run_id: d.migrate(),
    "get_schedules": lambda d, job, run_id: d.get_schedules(),
    "pause_schedule": lambda d, job, run_id: d.pause_schedule("any"),
    "resume_schedule": lambda d, job, run_id: d.resume_schedule("any"),
    "trigger_schedule": lambda d, job, run_id: d.trigger_schedule("any"),
}


async def echo(step: AsyncStepContext, input: int) -> int:
    return input


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_blocking_call_on_the_engines_loop_raises_at_once_naming_the_twin(
    durably: Durably, name: str
) -> None:
    job = durably.job("echo")(echo)

    async def main() -> tuple[str, BlockingCallError]:
        await durably.start_async()
        try:
            run = await job.trigger_and_wait_async(1, timeout=WAIT)
            with pytest.raises(BlockingCallError) as raised:
                CALLS[name](durably, job, run.id)
            return run.id, raised.value
        finally:
            await durably.stop_async()

    run_id, error = asyncio.run(main())

    method = name.rpartition(".")[2]
    assert f"{method}()" in str(error)
    assert f"await {method}_async(" in str(error)
    # Refused before it did anything: no run made, none changed or deleted.
    assert [(r.id, r.status) for r in durably.get_runs()] == [(run_id, RunStatus.COMPLETED)]


def test_stop_and_close_on_the_engines_loop_still_raise_conflict_error(durably: Durably) -> None:
    """They answer at once there (the asyncio engine runs), as documented."""

    async def main() -> None:
        await durably.start_async()
        try:
            with pytest.raises(ConflictError, match="stop_async"):
                durably.stop()
            with pytest.raises(ConflictError, match="stop_async"):
                durably.close()
        finally:
            await durably.stop_async()

    asyncio.run(main())


def test_the_same_calls_from_a_thread_work_while_the_engine_runs(durably: Durably) -> None:
    job = durably.job("echo")(echo)

    async def main() -> tuple[Any, ...]:
        await durably.start_async()
        try:
            done = await asyncio.to_thread(job.trigger_and_wait, 2, timeout=WAIT)
            read = await asyncio.to_thread(durably.get_run, done.id)
            listed = await asyncio.to_thread(job.get_runs)
            return done.output, read, listed
        finally:
            await durably.stop_async()

    output, read, listed = asyncio.run(main())

    assert output == 2
    assert read is not None
    assert read.status is RunStatus.COMPLETED
    assert [r.id for r in listed] == [read.id]


def test_the_same_calls_on_another_loop_work_while_the_engine_runs(durably: Durably) -> None:
    """Only the loops that run durably's jobs refuse: another loop blocks, but gets its answer."""
    job = durably.job("echo")(echo)

    async def elsewhere() -> tuple[Any, ...]:
        done = job.trigger_and_wait(3, timeout=WAIT)
        return done.output, durably.get_run(done.id)

    async def main() -> tuple[Any, ...]:
        await durably.start_async()
        try:
            return await asyncio.to_thread(asyncio.run, elsewhere())
        finally:
            await durably.stop_async()

    output, read = asyncio.run(main())

    assert output == 3
    assert read is not None
    assert read.status is RunStatus.COMPLETED


def test_once_the_engine_stopped_its_loop_may_block_again(durably: Durably) -> None:
    job = durably.job("echo")(echo)

    async def main() -> Any:
        await durably.start_async()
        run = await job.trigger_and_wait_async(4, timeout=WAIT)
        await durably.stop_async()
        return durably.get_run(run.id)

    read = asyncio.run(main())

    assert read is not None
    assert read.output == 4


@pytest.mark.parametrize("name", ["get_run", "stop"])
def test_an_async_job_on_the_thread_engine_gets_the_error_too(durably: Durably, name: str) -> None:
    """Its loop is durably's own: shared by every async job, and a ``stop()`` there
    would wait for the very job that called it."""

    @durably.job("calls-blocking")
    async def calls_blocking(step: AsyncStepContext, input: None) -> None:
        if name == "get_run":
            durably.get_run(step.run_id)
        else:
            durably.stop()

    @durably.job("calls-the-twin")
    async def calls_the_twin(step: AsyncStepContext, input: None) -> str:
        run = await durably.get_run_async(step.run_id)
        assert run is not None
        return run.status.value

    durably.start()
    refused = calls_blocking.trigger(None)
    with pytest.raises(RunFailedError, match=f"{name}_async"):
        durably.wait_for_run(refused.id, timeout=WAIT)
    assert durably.is_running
    assert calls_the_twin.trigger_and_wait(None, timeout=WAIT).output == "leased"
