"""The life of a claimed run in a worker: execute its job, record how it ended.

:func:`execute` runs a run in the calling thread, :func:`execute_async` on
the running event loop; each hands a job of the other kind to the other
(an ``async def`` job in a thread engine runs on the runtime's loop thread;
a ``def`` job under the asyncio engine runs whole in a step thread). Both
take ``then``: an operation run beside the record of the run's end, so that
their writes share a transaction (:func:`durably.core.operation.together`).
The worker engines claim their next run so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..bridge import Threads, run_in
from ..context import AsyncStepContext, StepContext
from ..core import operation
from ..core.leases import ClaimedRun
from ..core.operation import Operation
from ..instrumentation import RunAttempt
from .async_execution import AsyncExecution
from .execution import Execution
from .outcomes import Outcome, fail_op, settle_error_op, settle_output_op
from .runtime import Runtime
from .timeouts import Overran, await_within, call_within, timed_out_op
from .waiting import RunWaits, Suspended, suspend_op

Then = Callable[[], Operation[None]]
"""An operation to run beside a run's last write; it must not raise."""


def execute(runtime: Runtime, claimed: ClaimedRun, then: Then | None = None) -> Outcome:
    """Run a claimed run's job in this thread and record how it ended."""
    job = runtime.registry.get(claimed.lease.job_name)
    if job is not None and job.is_async:
        return runtime.loop_thread.run(execute_async(runtime, claimed, then=then))
    execution = Execution(runtime, claimed)
    with runtime.holding(execution.lease):
        found = execution.find_job()
        if isinstance(found, str):
            return operation.run(_record(fail_op(execution, found), then), runtime.db)
        job, job_input = found
        started = time.monotonic()
        step = StepContext(execution, RunWaits(execution))
        fn = job.fn
        if runtime.instrumentation is not None:
            fn = runtime.instrumentation.wrap_run(RunAttempt.of(claimed.row), fn)
        try:
            if job.timeout is None:
                output = fn(step, job_input)
            else:
                output = call_within(job.timeout, fn, step, job_input)
        except Overran as overran:
            record = timed_out_op(execution, overran.timeout)
        except Suspended as suspended:
            record = suspend_op(execution, suspended)
        except BaseException as exc:
            then = then if isinstance(exc, Exception) else None  # the worker goes down with it
            record = settle_error_op(execution, exc)
        else:
            record = settle_output_op(execution, output, started)
        return operation.run(_record(record, then), runtime.db)


async def execute_async(
    runtime: Runtime,
    claimed: ClaimedRun,
    *,
    step_threads: Threads | None = None,
    then: Then | None = None,
) -> Outcome:
    """Await a claimed run's job on the running loop and record how it ended."""
    job = runtime.registry.get(claimed.lease.job_name)
    if job is None or not job.is_async:
        return await run_in(step_threads, execute, runtime, claimed, then)
    execution = AsyncExecution(runtime, claimed, step_threads=step_threads)
    storage = runtime.async_db
    with runtime.holding(execution.lease):
        found = execution.find_job()
        if isinstance(found, str):
            return await operation.run_async(_record(fail_op(execution, found), then), storage)
        job, job_input = found
        started = time.monotonic()
        step = AsyncStepContext(execution, RunWaits(execution))
        fn: Any = job.fn
        if runtime.instrumentation is not None:
            fn = runtime.instrumentation.wrap_run(RunAttempt.of(claimed.row), fn)
        try:
            if job.timeout is None:
                output = await fn(step, job_input)
            else:
                output = await await_within(job.timeout, fn(step, job_input))
        except Overran as overran:
            record = timed_out_op(execution, overran.timeout)
        except Suspended as suspended:
            await execution.flush()
            record = suspend_op(execution, suspended)
        except BaseException as exc:
            then = then if isinstance(exc, Exception) else None  # the worker goes down with it
            await execution.flush()
            record = settle_error_op(execution, exc)
        else:
            await execution.flush()
            record = settle_output_op(execution, output, started)
        return await operation.run_async(_record(record, then), storage)


def _record(record: Operation[Outcome], then: Then | None) -> Operation[Outcome]:
    """``record``, and ``then()`` beside it: their writes share a transaction."""
    if then is None:
        return (yield from record)
    outcome, _ = yield from operation.together(record, then())
    return outcome
