"""Driving one claimed run: the replay/step algorithm, progress and logs.

The job function runs with no database transaction open. Each step's result
is written in its own short, fenced transaction after the step returns, so
a crash loses at most the step in progress (which then runs again: steps
are at-least-once, step *results* are recorded exactly once).

A step goes through three phases: :meth:`Execution.begin_step` (replay, or
start: no I/O; the heartbeat records a step still running as started, see
:mod:`durably.core.attempts`), the user's function, then
:meth:`Execution.step_returned_op` or :meth:`Execution.step_raised_op` (the
fenced write of the step and its attempt).
The writing phases are operations (:mod:`durably.core.operation`), written
once here; :class:`Execution` runs them in the calling thread (``def`` jobs),
:class:`~durably.engines.async_execution.AsyncExecution` from the event loop
(``async def`` jobs). The run's end (completed, failed, retried) is written
by :mod:`durably.engines.outcomes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..clock import now_ms, to_datetime
from ..core import operation
from ..core.claim import recovery_limit_error
from ..core.leases import AbortReason, ClaimedRun, Lease, RunningStep
from ..core.operation import Operation
from ..errors import (
    CancelledError,
    DatabaseError,
    DurablyError,
    LeaseLostError,
    RunTimeoutError,
    ValidationError,
)
from ..events import EventType
from ..io_models import conform
from ..models import Progress
from ..retry import Retry, check_retry
from ..status import LogLevel, RunStatus, StepStatus
from .retries import StepFailure
from .step_calls import StepCall, describe, format_traceback, traced_step

if TYPE_CHECKING:
    from .runtime import RegisteredJob, Runtime


class Execution:
    """The state of one run while this worker executes it, and its ``def`` steps."""

    def __init__(self, runtime: Runtime, claimed: ClaimedRun) -> None:
        self.runtime = runtime
        self.claimed = claimed
        self.lease: Lease = claimed.lease
        self.completed: dict[str, str | None] = dict(claimed.completed_steps)
        self.step_failures: dict[str, int] = dict(claimed.step_failures)
        self.attempt: int = claimed.row["attempt"]
        self.job: RegisteredJob | None = None
        self.failed_step: StepFailure | None = None
        """The last failure of a step with its own retry policy (see ``retries``)."""
        self.position = 0
        self.current_step: str | None = None
        self.stop_seen = False
        """The job was told to stop since its current step began (it may have cut it short)."""

    # -- aborting -----------------------------------------------------------

    def should_stop(self) -> bool:
        if self.lease.aborted.is_set():
            self.stop_seen = True
            return True
        return False

    def confirm_lease_op(self) -> Operation[None]:
        """Renew a lease past its local deadline before the run starts another step.

        No renewal landed within the lease (the database was busy or out of
        reach): another worker may have taken the run. Time alone does not
        say so; the fenced renewal does. It lands if nobody claimed the run
        since (the generation is unchanged), and the run goes on; refused,
        or failed, the run stops and is left to its lease.
        """
        lease = self.lease
        try:
            outcome = yield from self.runtime.service.heartbeat_op([], [lease])
        except Exception as exc:
            self.worker_error(exc, "lease-confirmation")
            lease.abort(AbortReason.LEASE_LOST)
            return
        for lost, reason in outcome.lost:
            lost.abort(reason)

    def check_abort(self) -> None:
        if self.should_stop():
            raise self._abort_error()

    def _abort_error(self) -> DurablyError:
        if self.lease.abort_reason == AbortReason.CANCELLED:
            return CancelledError(self.lease.run_id)
        timeout = None if self.job is None else self.job.timeout
        if self.lease.abort_reason == AbortReason.TIMED_OUT and timeout is not None:
            return RunTimeoutError(timeout)  # a job still running past its timeout
        return LeaseLostError(self.lease.run_id)

    def interrupted_op(self, attempt: StepCall) -> Operation[DurablyError]:
        """The step ran (or was awaiting) when the run was told to stop: record it as cut off."""
        yield from self.cut_off_op(attempt)
        if self.lease.abort_reason == AbortReason.CANCELLED:
            self.emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
        return self._abort_error()

    def cut_off_op(self, attempt: StepCall) -> Operation[None]:
        """Record a step that will have no result as started (it reads ``interrupted``).

        Nothing if a heartbeat recorded it already, or if the run was taken
        over since (``core.attempts``). A database that refuses this is
        reported, never raised: the run is stopping for another reason.
        """
        running = self._step_ended(attempt)
        if running is None or running.recorded:
            return
        try:
            yield from self.runtime.service.record_cut_off_op(self.lease, [running])
        except DatabaseError as exc:
            self.worker_error(exc, "step-cut-off")

    def _step_ended(self, attempt: StepCall) -> RunningStep | None:
        """The step is no longer running: out of the heartbeat's sight (its row is written,
        or about to be as it is cut off)."""
        self.current_step = None
        return self.lease.running_steps.pop(attempt.index, None)

    def _refused_op(self, attempt: StepCall) -> Operation[DurablyError]:
        """A fenced write matched nothing: find out whether we were cancelled or replaced."""
        yield from self.cut_off_op(attempt)
        status = yield from self.runtime.service.run_status_op(self.lease.run_id)
        if status == RunStatus.CANCELLED.value:
            self.lease.abort(AbortReason.CANCELLED)
            self.emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
            return CancelledError(self.lease.run_id)
        self.lease.abort(AbortReason.LEASE_LOST)
        return LeaseLostError(self.lease.run_id)

    # -- the step phases ----------------------------------------------------

    def begin_step(self, name: str, retry: Retry | None = None) -> StepCall:
        """Replay a completed step, or announce a new one. No database access."""
        if not isinstance(name, str) or not name:
            raise ValidationError("A step name must be a non-empty string")
        check_retry(retry, "A step's")
        self.check_abort()
        index = self.position
        self.position += 1
        if name in self.completed:
            try:
                output = serialization.load(self.runtime.serializer, self.completed[name])
            except ValueError:
                raise DurablyError(
                    f"The stored output of step {name!r} cannot be decoded; the run cannot resume"
                ) from None
            return StepCall(name, index, replayed=True, output=output)
        self.stop_seen = False
        attempt = StepCall(
            name, index, replayed=False, started_at=now_ms(), started=time.monotonic(), retry=retry
        )
        self.lease.running_steps[index] = RunningStep(name, index, self.attempt, attempt.started_at)
        self.emit(EventType.STEP_START, step_name=name, step_index=index)
        self.current_step = name
        return attempt

    def step_raised_op(self, attempt: StepCall, exc: Exception) -> Operation[BaseException]:
        """Record a step that raised; returns the exception the job should see."""
        if isinstance(exc, (CancelledError, LeaseLostError)):
            yield from self.cut_off_op(attempt)
            return exc
        if self.lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
            yield from self.cut_off_op(attempt)
            return LeaseLostError(self.lease.run_id)
        cancelled = self.lease.abort_reason == AbortReason.CANCELLED
        error = describe(exc)
        status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
        if not (yield from self._persist_op(attempt, status, None, error, format_traceback(exc))):
            return (yield from self._refused_op(attempt))
        self._step_ended(attempt)
        if cancelled:
            self.emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
            return exc
        failures = self.step_failures[attempt.name] = self.step_failures.get(attempt.name, 0) + 1
        if attempt.retry is not None:
            self.failed_step = StepFailure(exc, attempt.retry, failures)
        self.emit(
            EventType.STEP_FAIL, step_name=attempt.name, step_index=attempt.index, error=error
        )
        return exc

    def step_returned_op(self, attempt: StepCall, result: Any) -> Operation[Any]:
        """Record a step's result (fenced) and return it as stored, decoded (as a replay would)."""
        # Told to stop while the step ran: a cancelled run records nothing
        # more, and a step that saw the stop (``step.cancelled``,
        # ``step.wait``) may have cut its work short. Otherwise the step did
        # all its work: the fenced write keeps it if the lease still holds
        # (a shutdown, a lease that outlived its local deadline), and the
        # run then stops at its next step.
        if self.lease.aborted.is_set() and (
            self.stop_seen or self.lease.abort_reason == AbortReason.CANCELLED
        ):
            raise (yield from self.interrupted_op(attempt))
        try:
            output_json = serialization.store(
                self.runtime.serializer, result, what=f"The output of step {attempt.name!r}"
            )
        except ValidationError as exc:
            failed = self._persist_op(
                attempt, StepStatus.FAILED, None, str(exc), format_traceback(exc)
            )
            if not (yield from failed):
                yield from self.cut_off_op(attempt)
            else:
                self._step_ended(attempt)
                self.emit(
                    EventType.STEP_FAIL,
                    step_name=attempt.name,
                    step_index=attempt.index,
                    error=str(exc),
                )
            raise
        if not (yield from self._persist_op(attempt, StepStatus.COMPLETED, output_json, None)):
            raise (yield from self._refused_op(attempt))
        self._step_ended(attempt)
        self.completed[attempt.name] = output_json
        output = serialization.load(self.runtime.serializer, output_json)
        self.emit(
            EventType.STEP_COMPLETE,
            step_name=attempt.name,
            step_index=attempt.index,
            output=output,
            duration=time.monotonic() - attempt.started,
        )
        return output

    def _persist_op(
        self,
        attempt: StepCall,
        status: StepStatus,
        output_json: str | None,
        error: str | None,
        traceback: str | None = None,
    ) -> Operation[bool]:
        """The fenced step write. A database that refuses it stops the run, never fails it.

        The job did nothing wrong when the file stays locked past
        ``lock_timeout`` or cannot be written: the run is left to its lease,
        which expires, and a worker resumes it from its stored steps.
        """
        try:
            return (
                yield from self.runtime.service.persist_step_op(
                    self.lease,
                    name=attempt.name,
                    index=attempt.index,
                    status=status,
                    output_json=output_json,
                    error=error,
                    started_at=attempt.started_at,
                    run_attempt=self.attempt,
                    traceback=traceback,
                )
            )
        except DatabaseError as exc:
            raise self._write_failed(exc, "step-persist") from exc

    def _write_failed(self, exc: DatabaseError, context: str) -> LeaseLostError:
        """A step write the database refused: the run stops and is left to its lease."""
        self.worker_error(exc, context)
        self.lease.abort(AbortReason.LEASE_LOST)
        return LeaseLostError(self.lease.run_id)

    # -- a def step -----------------------------------------------------------

    def run_step(self, name: str, fn: Callable[[], Any], retry: Retry | None = None) -> Any:
        if self.lease.expired_locally:
            operation.run(self.confirm_lease_op(), self.runtime.db)
        attempt = self.begin_step(name, retry)
        if attempt.replayed:
            return attempt.output
        if self.runtime.instrumentation is not None:
            fn = traced_step(self.runtime.instrumentation, self.claimed, attempt, fn)
        return self.call_step(attempt, fn)

    def call_step(self, attempt: StepCall, fn: Callable[[], Any]) -> Any:
        """Call a ``def`` step function here and record how it ended (the fenced write)."""
        db = self.runtime.db
        try:
            result = fn()
        except Exception as exc:
            error = operation.run(self.step_raised_op(attempt, exc), db)
            if error is exc:
                raise
            raise error from exc
        return operation.run(self.step_returned_op(attempt, result), db)

    def wait(self, seconds: float) -> bool:
        self.lease.aborted.wait(seconds)
        return self.should_stop()

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
        progress_json = serialization.dumps(progress.to_json(), what="progress")
        self.store("progress", self.runtime.service.set_progress_op(self.lease, progress_json))
        self.emit(EventType.RUN_PROGRESS, progress=progress)

    def log(self, level: LogLevel, message: str, data: Any) -> None:
        if not isinstance(message, str):
            raise ValidationError("A log message must be a string")
        data_json = (
            None
            if data is None
            else serialization.store(self.runtime.serializer, data, what="Log data")
        )
        write = self.runtime.service.append_log_op(
            self.lease,
            step_name=self.current_step,
            level=level.value,
            message=message,
            data_json=data_json,
        )
        self.store("log", write)
        self.emit(
            EventType.LOG_WRITE,
            step_name=self.current_step,
            level=level.value,
            message=message,
            data=data,
        )

    def store(self, context: str, write: Operation[Any]) -> None:
        """A progress/log write: best effort (a failure is a ``worker:error``, not a job error).

        Both are fenced: a worker that lost its lease has them refused, and
        learns that it lost it at its next step write.
        """
        try:
            operation.run(write, self.runtime.db)
        except DurablyError as exc:
            self.worker_error(exc, context)

    # -- the run --------------------------------------------------------------

    def find_job(self) -> tuple[Any, Any] | str:
        """Announce the lease; the job and its input, or why the run cannot run. No I/O."""
        self.emit(
            EventType.RUN_LEASED,
            input=serialization.load_or_text(self.runtime.serializer, self.claimed.row["input"]),
            lease_owner=self.lease.owner,
            lease_expires_at=to_datetime(self.lease.expires_at),
        )
        job = self.job = self.runtime.registry.get(self.lease.job_name)
        if job is None:
            return f"Unknown job: {self.lease.job_name}"
        too_many = recovery_limit_error(self.claimed.row["recovery_count"], job.max_recoveries)
        if too_many is not None:
            return too_many
        try:
            job_input = serialization.load(self.runtime.serializer, self.claimed.row["input"])
        except ValueError:
            serializer = type(self.runtime.serializer).__name__
            return f"The run's stored input cannot be decoded by its serializer ({serializer})"
        try:  # a run stored before the job declared its input model
            job_input = conform(job.input_model, job_input, f"The input of job {job.name!r}")
        except ValidationError as exc:
            return str(exc)
        try:
            serialization.loads(self.claimed.row["labels"])
        except ValueError:
            return "The run's stored labels are not valid JSON"
        return job, job_input

    # -- events -------------------------------------------------------------

    def emit(self, event_type: EventType, **fields: Any) -> None:
        self.runtime.events.emit(
            event_type,
            run_id=self.lease.run_id,
            job_name=self.lease.job_name,
            labels=self.lease.labels,
            queue=self.claimed.row["queue"],
            **fields,
        )

    def worker_error(self, exc: BaseException, context: str) -> None:
        self.runtime.events.emit(
            EventType.WORKER_ERROR,
            run_id=self.lease.run_id,
            job_name=self.lease.job_name,
            error=str(exc),
            exception=exc,
            context=context,
        )
