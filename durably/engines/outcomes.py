"""How a run's attempt ends: the fenced writes of its outcome, and what each returns.

A job returned (:func:`settle_output_op`), raised (:func:`settle_error_op`:
retried under its policy, failed, or left to its lease when durably stopped
it) or could not start (:func:`fail_op`). Each write is fenced by the lease;
a refused one asks the run's status to tell a cancelled run from a lost
lease. They live apart from :mod:`durably.engines.execution`, which drives
the steps, because they run once, after the job's code: both engines run
them through their own driver (:mod:`durably.engines.run`), as does the
settling of a timed-out attempt (:mod:`durably.engines.timeouts`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from .. import serialization
from ..clock import to_datetime
from ..core.leases import AbortReason
from ..core.operation import Operation
from ..errors import CancelledError, LeaseLostError, ValidationError
from ..events import EventType
from ..io_models import conform
from ..status import RunStatus
from .execution import Execution
from .retries import retry_delay
from .step_calls import describe

Outcome = Literal["completed", "failed", "retrying", "waiting", "cancelled", "lease-lost"]


def settle_error_op(execution: Execution, exc: BaseException) -> Operation[Outcome]:
    """Record how a job that raised ended.

    ``KeyboardInterrupt``, ``SystemExit`` or a cancelled task are not the
    job's fault: the run is handed back, so another worker resumes it at
    once, and the exception goes on.
    """
    lease = execution.lease
    if isinstance(exc, (CancelledError, LeaseLostError)):
        if lease.abort_reason is None:  # raised by the job itself, not by durably
            return (yield from fail_op(execution, describe(exc), exc))
        return (yield from _stopped_op(execution))
    if isinstance(exc, Exception):
        if lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
            return (yield from _stopped_op(execution))
        job_policy = None if execution.job is None else execution.job.retry
        delay = retry_delay(exc, job_policy, execution.attempt, execution.failed_step)
        if delay is not None:
            return (yield from _retry_op(execution, describe(exc), delay, exc))
        return (yield from fail_op(execution, describe(exc), exc))
    try:
        yield from execution.runtime.service.release_op(lease)
    finally:
        raise exc


def settle_output_op(execution: Execution, output: Any, started: float) -> Operation[Outcome]:
    """Record a job's return value as the run's output (fenced by the lease)."""
    runtime = execution.runtime
    try:
        model = None if execution.job is None else execution.job.output_model
        output = conform(model, output, "The job's output")
        output_json = serialization.store(runtime.serializer, output, what="The job's output")
    except ValidationError as exc:
        return (yield from fail_op(execution, str(exc)))
    if (yield from runtime.service.complete_op(execution.lease, output_json)):
        execution.emit(
            EventType.RUN_COMPLETE,
            output=serialization.load(runtime.serializer, output_json),
            duration=time.monotonic() - started,
        )
        return "completed"
    return (yield from _not_ours_op(execution, "run-completion"))


def fail_op(
    execution: Execution, error: str, exc: BaseException | None = None
) -> Operation[Outcome]:
    """Record the run as failed with ``error`` (fenced by the lease)."""
    accepted, failed_step = yield from execution.runtime.service.fail_op(execution.lease, error)
    if accepted:
        execution.emit(EventType.RUN_FAIL, error=error, failed_step_name=failed_step, exception=exc)
        return "failed"
    return (yield from _not_ours_op(execution, "run-failure"))


def _retry_op(
    execution: Execution, error: str, delay: float, exc: BaseException | None = None
) -> Operation[Outcome]:
    """End this attempt; the run waits ``delay`` seconds, pending, for the next."""
    runtime = execution.runtime
    run_at = yield from runtime.service.schedule_retry_op(execution.lease, error, delay)
    if run_at is None:
        return (yield from _not_ours_op(execution, "run-retry"))
    runtime.due_times.add(run_at)
    execution.emit(
        EventType.RUN_RETRY_SCHEDULED,
        error=error,
        attempt=execution.attempt + 1,
        run_at=to_datetime(run_at),
        exception=exc,
    )
    return "retrying"


def _not_ours_op(execution: Execution, context: str) -> Operation[Outcome]:
    """The run's end was refused by the fence: cancelled meanwhile, or the lease is lost."""
    status = yield from execution.runtime.service.run_status_op(execution.lease.run_id)
    if status == RunStatus.CANCELLED.value:
        return "cancelled"
    execution.worker_error(LeaseLostError(execution.lease.run_id), context)
    return "lease-lost"


def _stopped_op(execution: Execution) -> Operation[Outcome]:
    if execution.lease.abort_reason == AbortReason.CANCELLED:
        return "cancelled"
    if execution.lease.abort_reason == AbortReason.SHUTDOWN:
        # Completed steps are stored; the next worker resumes from them now
        # instead of waiting for the lease to expire.
        yield from execution.runtime.service.release_op(execution.lease)
    return "lease-lost"
