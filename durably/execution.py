"""Driving one claimed run to its end: the replay/step algorithm and the outcome writes.

The job function runs with no database transaction open. Each step's result
is written in its own short, fenced transaction after the step returns, so
a crash loses at most the step in progress (which then runs again: steps
are at-least-once, step *results* are recorded exactly once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from . import serialization
from .clock import now_ms, to_datetime
from .context import StepContext
from .errors import CancelledError, DurablyError, LeaseLostError, ValidationError
from .events import EventType
from .leases import AbortReason, ClaimedRun, Lease
from .models import Progress
from .status import LogLevel, RunStatus, StepStatus

if TYPE_CHECKING:
    from .runtime import Runtime

Outcome = Literal["completed", "failed", "cancelled", "lease-lost"]


def describe(exc: BaseException) -> str:
    """The error text stored on a failed run or step: ``"ValueError: bad input"``."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Execution:
    """The state of one run while this worker executes it."""

    def __init__(self, runtime: Runtime, claimed: ClaimedRun) -> None:
        self.runtime = runtime
        self.lease: Lease = claimed.lease
        self.completed: dict[str, str | None] = dict(claimed.completed_steps)
        self.position = 0
        """Index of the next step in the job's code order (replayed steps count)."""
        self.current_step: str | None = None

    # -- aborting -----------------------------------------------------------

    def should_stop(self) -> bool:
        lease = self.lease
        if lease.aborted.is_set():
            return True
        if lease.expired_locally:
            # No successful heartbeat within the lease: another worker may own
            # the run now, whether or not we can reach the database to ask.
            lease.abort(AbortReason.LEASE_LOST)
            return True
        return False

    def check_abort(self) -> None:
        if self.should_stop():
            raise self._abort_error()

    def _abort_error(self) -> DurablyError:
        if self.lease.abort_reason == AbortReason.CANCELLED:
            return CancelledError(self.lease.run_id)
        return LeaseLostError(self.lease.run_id)

    def _refused(self, step_name: str, index: int) -> DurablyError:
        """A fenced write matched nothing: find out whether we were cancelled or replaced."""
        status = self.runtime.service.run_status(self.lease.run_id)
        if status == RunStatus.CANCELLED.value:
            self.lease.abort(AbortReason.CANCELLED)
            self._emit(EventType.STEP_CANCEL, step_name=step_name, step_index=index)
            return CancelledError(self.lease.run_id)
        self.lease.abort(AbortReason.LEASE_LOST)
        return LeaseLostError(self.lease.run_id)

    # -- steps --------------------------------------------------------------

    def run_step(self, name: str, fn: Callable[[], Any]) -> Any:
        if not isinstance(name, str) or not name:
            raise ValidationError("A step name must be a non-empty string")
        self.check_abort()
        index = self.position
        self.position += 1
        if name in self.completed:
            return self._replay(name)

        service = self.runtime.service
        started_at = now_ms()
        started = time.monotonic()
        self._emit(EventType.STEP_START, step_name=name, step_index=index)
        self.current_step = name
        try:
            result = fn()
        except (CancelledError, LeaseLostError):
            raise
        except Exception as exc:
            if self.lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
                raise LeaseLostError(self.lease.run_id) from exc
            cancelled = self.lease.abort_reason == AbortReason.CANCELLED
            status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
            error = describe(exc)
            if not service.persist_step(
                self.lease,
                name=name,
                index=index,
                status=status,
                output_json=None,
                error=error,
                started_at=started_at,
            ):
                raise self._refused(name, index) from exc
            if cancelled:
                self._emit(EventType.STEP_CANCEL, step_name=name, step_index=index)
            else:
                self._emit(EventType.STEP_FAIL, step_name=name, step_index=index, error=error)
            raise
        finally:
            self.current_step = None

        # A cancel that arrived while fn ran must not be recorded as completed.
        if self.should_stop():
            if self.lease.abort_reason == AbortReason.CANCELLED:
                self._emit(EventType.STEP_CANCEL, step_name=name, step_index=index)
            raise self._abort_error()
        try:
            output_json = serialization.dumps(result, what=f"The output of step {name!r}")
        except ValidationError as exc:
            if service.persist_step(
                self.lease,
                name=name,
                index=index,
                status=StepStatus.FAILED,
                output_json=None,
                error=str(exc),
                started_at=started_at,
            ):
                self._emit(EventType.STEP_FAIL, step_name=name, step_index=index, error=str(exc))
            raise
        if not service.persist_step(
            self.lease,
            name=name,
            index=index,
            status=StepStatus.COMPLETED,
            output_json=output_json,
            error=None,
            started_at=started_at,
        ):
            raise self._refused(name, index)
        self.completed[name] = output_json
        output = serialization.loads(output_json)
        self._emit(
            EventType.STEP_COMPLETE,
            step_name=name,
            step_index=index,
            output=output,
            duration=time.monotonic() - started,
        )
        return output

    def _replay(self, name: str) -> Any:
        try:
            return serialization.loads(self.completed[name])
        except ValueError:
            raise DurablyError(
                f"The stored output of step {name!r} cannot be decoded; the run cannot resume"
            ) from None

    # -- progress and logs ----------------------------------------------------

    def progress(self, current: float, total: float | None, message: str | None) -> None:
        for label, value in (("current", current), ("total", total)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValidationError(f"progress {label} must be a number")
        if message is not None and not isinstance(message, str):
            raise ValidationError("progress message must be a string")
        progress = Progress(current, total, message)
        try:
            self.runtime.service.set_progress(
                self.lease, serialization.dumps(progress.to_json(), what="progress")
            )
        except DurablyError as exc:
            self._worker_error(exc, "progress")
        self._emit(EventType.RUN_PROGRESS, progress=progress)

    def log(self, level: LogLevel, message: str, data: Any) -> None:
        if not isinstance(message, str):
            raise ValidationError("A log message must be a string")
        data_json = None if data is None else serialization.dumps(data, what="Log data")
        try:
            self.runtime.service.append_log(
                self.lease.run_id,
                step_name=self.current_step,
                level=level.value,
                message=message,
                data_json=data_json,
            )
        except DurablyError as exc:
            self._worker_error(exc, "log")
        self._emit(
            EventType.LOG_WRITE,
            step_name=self.current_step,
            level=level.value,
            message=message,
            data=data,
        )

    # -- events -------------------------------------------------------------

    def _emit(self, event_type: EventType, **fields: Any) -> None:
        self.runtime.events.emit(
            event_type,
            run_id=self.lease.run_id,
            job_name=self.lease.job_name,
            labels=self.lease.labels,
            **fields,
        )

    def _worker_error(self, exc: BaseException, context: str) -> None:
        self.runtime.events.emit(
            EventType.WORKER_ERROR,
            run_id=self.lease.run_id,
            job_name=self.lease.job_name,
            error=str(exc),
            exception=exc,
            context=context,
        )


def execute(runtime: Runtime, claimed: ClaimedRun) -> Outcome:
    """Run a claimed run's job and record how it ended (fenced by the lease)."""
    lease = claimed.lease
    service = runtime.service
    runtime.leases.add(lease)
    runtime.heartbeat.ensure_running()
    try:
        execution = Execution(runtime, claimed)
        execution._emit(
            EventType.RUN_LEASED,
            input=serialization.loads_or_text(claimed.row["input"]),
            lease_owner=lease.owner,
            lease_expires_at=to_datetime(lease.expires_at),
        )
        job = runtime.registry.get(lease.job_name)
        if job is None:
            return _fail(runtime, execution, f"Unknown job: {lease.job_name}")
        try:
            job_input = serialization.loads(claimed.row["input"])
        except ValueError:
            return _fail(runtime, execution, "The run's stored input is not valid JSON")

        started = time.monotonic()
        try:
            output = job.fn(StepContext(execution), job_input)
        except (CancelledError, LeaseLostError) as exc:
            if lease.abort_reason is None:  # raised by the job itself, not by durably
                return _fail(runtime, execution, describe(exc))
            return _stopped(runtime, lease)
        except Exception as exc:
            if lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
                return _stopped(runtime, lease)
            return _fail(runtime, execution, describe(exc))
        except BaseException:
            # KeyboardInterrupt, SystemExit...: not the job's fault. Hand the
            # run back so another worker resumes it at once.
            try:
                service.release(lease)
            finally:
                raise

        try:
            output_json = serialization.dumps(output, what="The job's output")
        except ValidationError as exc:
            return _fail(runtime, execution, str(exc))
        if service.complete(lease, output_json):
            execution._emit(
                EventType.RUN_COMPLETE,
                output=serialization.loads(output_json),
                duration=time.monotonic() - started,
            )
            return "completed"
        if service.run_status(lease.run_id) == RunStatus.CANCELLED.value:
            return "cancelled"
        execution._worker_error(LeaseLostError(lease.run_id), "run-completion")
        return "lease-lost"
    finally:
        runtime.leases.remove(lease)


def _stopped(runtime: Runtime, lease: Lease) -> Outcome:
    if lease.abort_reason == AbortReason.CANCELLED:
        return "cancelled"
    if lease.abort_reason == AbortReason.SHUTDOWN:
        # Completed steps are stored; the next worker resumes from them now
        # instead of waiting for the lease to expire.
        runtime.service.release(lease)
    return "lease-lost"


def _fail(runtime: Runtime, execution: Execution, error: str) -> Outcome:
    accepted, failed_step = runtime.service.fail(execution.lease, error)
    if accepted:
        execution._emit(EventType.RUN_FAIL, error=error, failed_step_name=failed_step)
        return "failed"
    if runtime.service.run_status(execution.lease.run_id) == RunStatus.CANCELLED.value:
        return "cancelled"
    execution._worker_error(LeaseLostError(execution.lease.run_id), "run-failure")
    return "lease-lost"
