"""Driving one claimed run to its end: the replay/step algorithm and the outcome writes.

The job function runs with no database transaction open. Each step's result
is written in its own short, fenced transaction after the step returns, so
a crash loses at most the step in progress (which then runs again: steps
are at-least-once, step *results* are recorded exactly once).

A step goes through three phases, shared by both kinds of job:
:meth:`Execution.begin_step` (replay or start; no I/O), the user's function,
then :meth:`Execution.step_returned_op` or :meth:`Execution.step_raised_op`
(the fenced write). The writing phases, and the run's end, are operations
(:mod:`durably.operation`), written once: ``def`` jobs run them in line
(:func:`execute`); ``async def`` jobs await the user's function on the event
loop and run them from there, their writes travelling to a database thread
with those of the loop's other runs (:func:`execute_async`), except a ``def``
step's, which its step thread writes right after it returns. Either engine
can execute either kind: each entry point hands the other kind to the other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from . import operation, serialization
from .bridge import Threads, run_in, running_loop, wait_event
from .clock import now_ms, to_datetime
from .context import AsyncStepContext, StepContext
from .errors import (
    CancelledError,
    DatabaseError,
    DurablyError,
    LeaseLostError,
    ValidationError,
)
from .events import EventType
from .leases import AbortReason, ClaimedRun, Lease
from .models import Progress
from .operation import Call, Operation
from .status import LogLevel, RunStatus, StepStatus

if TYPE_CHECKING:
    from .jobs import AsyncJobFunction, Job, JobFunction
    from .runtime import Runtime

Outcome = Literal["completed", "failed", "cancelled", "lease-lost"]


def describe(exc: BaseException) -> str:
    """The error text stored on a failed run or step: ``"ValueError: bad input"``."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True)
class StepAttempt:
    name: str
    index: int
    """Position in the job's code order (replayed steps count)."""
    replayed: bool
    output: Any = None
    """The stored output, when ``replayed``."""
    started_at: int = 0
    started: float = 0.0


class Execution:
    """The state of one run while this worker executes it."""

    def __init__(
        self,
        runtime: Runtime,
        claimed: ClaimedRun,
        *,
        is_async: bool = False,
        step_threads: Threads | None = None,
    ) -> None:
        self.runtime = runtime
        self.claimed = claimed
        self.lease: Lease = claimed.lease
        self.completed: dict[str, str | None] = dict(claimed.completed_steps)
        self.position = 0
        self.current_step: str | None = None
        self.is_async = is_async
        """An ``async def`` job, driven by :func:`execute_async`."""
        self.step_threads = step_threads
        """Where an async job's ``def`` steps run (None: the loop's default executor)."""
        self._writes: _WriteQueue | None = None
        self._abort_event: asyncio.Event | None = None
        self._step_waiter: asyncio.Future[None] | None = None
        """What the awaiting task waits on while an async step runs (``_await_step``)."""

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

    def _interrupted(self, attempt: StepAttempt) -> DurablyError:
        """The step ran (or was awaiting) when the run was told to stop: do not record it."""
        if self.lease.abort_reason == AbortReason.CANCELLED:
            self._emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
        return self._abort_error()

    def _refused_op(self, attempt: StepAttempt) -> Operation[DurablyError]:
        """A fenced write matched nothing: find out whether we were cancelled or replaced."""
        status = yield Call(self.runtime.service.run_status, (self.lease.run_id,))
        if status == RunStatus.CANCELLED.value:
            self.lease.abort(AbortReason.CANCELLED)
            self._emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
            return CancelledError(self.lease.run_id)
        self.lease.abort(AbortReason.LEASE_LOST)
        return LeaseLostError(self.lease.run_id)

    # -- the step phases ----------------------------------------------------

    def begin_step(self, name: str) -> StepAttempt:
        """Replay a completed step, or announce a new one. No database access."""
        if not isinstance(name, str) or not name:
            raise ValidationError("A step name must be a non-empty string")
        self.check_abort()
        index = self.position
        self.position += 1
        if name in self.completed:
            try:
                output = serialization.loads(self.completed[name])
            except ValueError:
                raise DurablyError(
                    f"The stored output of step {name!r} cannot be decoded; the run cannot resume"
                ) from None
            return StepAttempt(name, index, replayed=True, output=output)
        attempt = StepAttempt(
            name, index, replayed=False, started_at=now_ms(), started=time.monotonic()
        )
        self._emit(EventType.STEP_START, step_name=name, step_index=index)
        self.current_step = name
        return attempt

    def step_raised_op(self, attempt: StepAttempt, exc: Exception) -> Operation[BaseException]:
        """Record a step that raised; returns the exception the job should see."""
        self.current_step = None
        if isinstance(exc, (CancelledError, LeaseLostError)):
            return exc
        if self.lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
            return LeaseLostError(self.lease.run_id)
        cancelled = self.lease.abort_reason == AbortReason.CANCELLED
        error = describe(exc)
        status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
        if not (yield from self._persist_op(attempt, status, None, error)):
            return (yield from self._refused_op(attempt))
        if cancelled:
            self._emit(EventType.STEP_CANCEL, step_name=attempt.name, step_index=attempt.index)
        else:
            self._emit(
                EventType.STEP_FAIL, step_name=attempt.name, step_index=attempt.index, error=error
            )
        return exc

    def step_returned_op(self, attempt: StepAttempt, result: Any) -> Operation[Any]:
        """Record a step's result (fenced) and return its JSON round-trip."""
        self.current_step = None
        # Told to stop while the step ran (cancel, lost lease, shutdown): the
        # step may have cut its work short on seeing it, so its result is not
        # recorded. The next worker runs the step again.
        if self.should_stop():
            raise self._interrupted(attempt)
        try:
            output_json = serialization.dumps(result, what=f"The output of step {attempt.name!r}")
        except ValidationError as exc:
            if (yield from self._persist_op(attempt, StepStatus.FAILED, None, str(exc))):
                self._emit(
                    EventType.STEP_FAIL,
                    step_name=attempt.name,
                    step_index=attempt.index,
                    error=str(exc),
                )
            raise
        if not (yield from self._persist_op(attempt, StepStatus.COMPLETED, output_json, None)):
            raise (yield from self._refused_op(attempt))
        self.completed[attempt.name] = output_json
        output = serialization.loads(output_json)
        self._emit(
            EventType.STEP_COMPLETE,
            step_name=attempt.name,
            step_index=attempt.index,
            output=output,
            duration=time.monotonic() - attempt.started,
        )
        return output

    def _persist_op(
        self, attempt: StepAttempt, status: StepStatus, output_json: str | None, error: str | None
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
                )
            )
        except DatabaseError as exc:
            self._worker_error(exc, "step-persist")
            self.lease.abort(AbortReason.LEASE_LOST)
            raise LeaseLostError(self.lease.run_id) from exc

    # -- steps, sync and async ----------------------------------------------

    def run_step(self, name: str, fn: Callable[[], Any]) -> Any:
        attempt = self.begin_step(name)
        if attempt.replayed:
            return attempt.output
        return self._call_step(attempt, fn)

    def _call_step(self, attempt: StepAttempt, fn: Callable[[], Any]) -> Any:
        """Call a ``def`` step function here and record how it ended (the fenced write).

        An async job's ``def`` step runs this whole in a step thread: one
        thread hop per step, not one for the function and then a trip for
        the write (measured: slower, though the trip is shared with other
        runs' writes). A result that is awaitable comes back unrecorded, as
        :class:`_Awaitable`, for the loop to await.
        """
        db = self.runtime.db
        try:
            result = fn()
        except Exception as exc:
            error = operation.run(self.step_raised_op(attempt, exc), db)
            if error is exc:
                raise
            raise error from exc
        if self.is_async and inspect.isawaitable(result):
            return _Awaitable(result)
        return operation.run(self.step_returned_op(attempt, result), db)

    async def run_step_async(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a step of an async job: coroutines on the loop, ``def`` functions in a thread.

        A ``def`` function cannot be interrupted; as in a ``def`` job, its
        result is discarded if the run was told to stop while it ran. It is
        recorded in the same thread, right after it returns. A coroutine's
        result is recorded from the loop: the write travels with those of
        the loop's other runs (:mod:`durably.loop_commit`).
        """
        attempt = self.begin_step(name)
        if attempt.replayed:
            return attempt.output
        if inspect.iscoroutinefunction(fn):
            awaitable: Awaitable[Any] = fn()
        else:
            # Progress and logs reported before this step are stored before its result.
            await self.flush()
            ran = await run_in(self.step_threads, self._call_step, attempt, fn)
            if not isinstance(ran, _Awaitable):
                return ran
            awaitable = ran.awaitable
        try:
            result = await self._await_step(attempt, awaitable)
        except (CancelledError, LeaseLostError):
            self.current_step = None
            raise
        except Exception as exc:
            await self.flush()
            error = await operation.run_async(self.step_raised_op(attempt, exc), self.runtime)
            if error is exc:
                raise
            raise error from exc
        await self.flush()
        return await operation.run_async(self.step_returned_op(attempt, result), self.runtime)

    async def _await_step(self, attempt: StepAttempt, awaitable: Awaitable[Any]) -> Any:
        """Await a step's coroutine on the loop.

        It is cancelled as soon as the run is told to stop (cancelled, lease
        lost, worker shutting down). This task waits on one future that
        either the step's end or the abort resolves: no second task and no
        ``asyncio.wait`` per step (they cost a fifth of the loop's time in a
        busy worker).
        """
        aborted = self._aborted()
        task = asyncio.ensure_future(awaitable)
        waiter = self._step_waiter = task.get_loop().create_future()
        task.add_done_callback(functools.partial(_wake, waiter))
        try:
            if not aborted.is_set():
                await waiter
            if not task.done():  # told to stop
                task.cancel()
                await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: moot once the run stops
                raise self._interrupted(attempt)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._step_waiter = None
        return task.result()

    def _aborted(self) -> asyncio.Event:
        """An event set (on this loop) when the lease is aborted from any thread.

        The abort also wakes the step being awaited, if any (``_await_step``).
        """
        if self._abort_event is None:
            event = self._abort_event = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_loop() -> None:
                event.set()
                if self._step_waiter is not None:
                    _wake(self._step_waiter)

            def from_any_thread() -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(on_loop)

            self.lease.on_abort(from_any_thread)
        return self._abort_event

    async def wait_async(self, seconds: float) -> bool:
        await wait_event(self._aborted(), seconds)
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
        self._store("progress", self.runtime.service.set_progress, self.lease, progress_json)
        self._emit(EventType.RUN_PROGRESS, progress=progress)

    def log(self, level: LogLevel, message: str, data: Any) -> None:
        if not isinstance(message, str):
            raise ValidationError("A log message must be a string")
        data_json = None if data is None else serialization.dumps(data, what="Log data")
        self._store(
            "log",
            self.runtime.service.append_log,
            self.lease.run_id,
            step_name=self.current_step,
            level=level.value,
            message=message,
            data_json=data_json,
        )
        self._emit(
            EventType.LOG_WRITE,
            step_name=self.current_step,
            level=level.value,
            message=message,
            data=data,
        )

    def _store(self, context: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A progress/log write: best effort (a failure is a ``worker:error``, not a job error).

        In an async job it is queued, in order, for a database thread, so
        ``step.progress()`` and ``step.log`` never block the event loop; the
        queue is flushed before the next step result and the run's outcome.
        """

        def write() -> None:
            try:
                fn(*args, **kwargs)
            except DurablyError as exc:
                self._worker_error(exc, context)

        if not (self.is_async and running_loop() is not None):
            write()  # a def job, or a def step of an async job: already off the loop
            return
        if self._writes is None:
            self._writes = _WriteQueue(self.runtime)
        self._writes.submit(write)

    async def flush(self) -> None:
        """Wait until queued progress/log writes are stored."""
        if self._writes is not None:
            await self._writes.flush()

    # -- the run --------------------------------------------------------------

    def prepare(self) -> tuple[Job[Any, Any], Any] | Outcome:
        """Announce the lease and find the job and its input; fail the run if either is bad."""
        found = self.find_job()
        return self.fail(found) if isinstance(found, str) else found

    def find_job(self) -> tuple[Job[Any, Any], Any] | str:
        """Announce the lease; the job and its input, or why the run cannot run. No I/O."""
        self._emit(
            EventType.RUN_LEASED,
            input=serialization.loads_or_text(self.claimed.row["input"]),
            lease_owner=self.lease.owner,
            lease_expires_at=to_datetime(self.lease.expires_at),
        )
        job = self.runtime.registry.get(self.lease.job_name)
        if job is None:
            return f"Unknown job: {self.lease.job_name}"
        try:
            job_input = serialization.loads(self.claimed.row["input"])
        except ValueError:
            return "The run's stored input is not valid JSON"
        try:
            serialization.loads(self.claimed.row["labels"])
        except ValueError:
            return "The run's stored labels are not valid JSON"
        return job, job_input

    def settle_error(self, exc: BaseException) -> Outcome:
        """Record how a job that raised ended."""
        lease = self.lease
        if isinstance(exc, (CancelledError, LeaseLostError)):
            if lease.abort_reason is None:  # raised by the job itself, not by durably
                return self.fail(describe(exc))
            return self._stopped()
        if isinstance(exc, Exception):
            if lease.abort_reason in (AbortReason.LEASE_LOST, AbortReason.SHUTDOWN):
                return self._stopped()
            return self.fail(describe(exc))
        # KeyboardInterrupt, SystemExit, a cancelled task: not the job's fault.
        # Hand the run back so another worker resumes it at once.
        try:
            self.runtime.service.release(lease)
        finally:
            raise exc

    def settle_output_op(self, output: Any, started: float) -> Operation[Outcome]:
        """Record a job's return value as the run's output (fenced by the lease)."""
        try:
            output_json = serialization.dumps(output, what="The job's output")
        except ValidationError as exc:
            outcome: Outcome = yield Call(self.fail, (str(exc),))
            return outcome
        service = self.runtime.service
        if (yield from service.complete_op(self.lease, output_json)):
            self._emit(
                EventType.RUN_COMPLETE,
                output=serialization.loads(output_json),
                duration=time.monotonic() - started,
            )
            return "completed"
        if (yield Call(service.run_status, (self.lease.run_id,))) == RunStatus.CANCELLED.value:
            return "cancelled"
        self._worker_error(LeaseLostError(self.lease.run_id), "run-completion")
        return "lease-lost"

    def fail(self, error: str) -> Outcome:
        accepted, failed_step = self.runtime.service.fail(self.lease, error)
        if accepted:
            self._emit(EventType.RUN_FAIL, error=error, failed_step_name=failed_step)
            return "failed"
        if self.runtime.service.run_status(self.lease.run_id) == RunStatus.CANCELLED.value:
            return "cancelled"
        self._worker_error(LeaseLostError(self.lease.run_id), "run-failure")
        return "lease-lost"

    def _stopped(self) -> Outcome:
        if self.lease.abort_reason == AbortReason.CANCELLED:
            return "cancelled"
        if self.lease.abort_reason == AbortReason.SHUTDOWN:
            # Completed steps are stored; the next worker resumes from them now
            # instead of waiting for the lease to expire.
            self.runtime.service.release(self.lease)
        return "lease-lost"

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


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True)
class _Awaitable:
    """What a ``def`` step function of an async job returned when it was awaitable."""

    awaitable: Awaitable[Any]


class _WriteQueue:
    """An async job's progress and log writes, stored in order by one task at a time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self._pending.append(write)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            await self._runtime.call(self._pending.popleft())

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def _job_of(runtime: Runtime, claimed: ClaimedRun) -> Job[Any, Any] | None:
    return runtime.registry.get(claimed.lease.job_name)


def execute(runtime: Runtime, claimed: ClaimedRun) -> Outcome:
    """Run a claimed run's job in this thread and record how it ended.

    An ``async def`` job is handed to the runtime's event-loop thread and
    awaited there while this thread waits for it.
    """
    job = _job_of(runtime, claimed)
    if job is not None and job.is_async:
        return runtime.loop_thread.run(execute_async(runtime, claimed))
    execution = Execution(runtime, claimed)
    runtime.leases.add(execution.lease)
    runtime.heartbeat.ensure_running()
    try:
        prepared = execution.prepare()
        if isinstance(prepared, str):
            return prepared
        job, job_input = prepared
        started = time.monotonic()
        try:
            sync_fn = cast("JobFunction[Any, Any]", job.fn)
            output = sync_fn(StepContext(execution), job_input)
        except BaseException as exc:
            return execution.settle_error(exc)
        return operation.run(execution.settle_output_op(output, started), runtime.db)
    finally:
        runtime.leases.remove(execution.lease)


async def execute_async(
    runtime: Runtime,
    claimed: ClaimedRun,
    *,
    step_threads: Threads | None = None,
    then: Callable[[], Operation[None]] | None = None,
) -> Outcome:
    """Await a claimed run's job on the running loop and record how it ended.

    Database writes go through the runtime's database threads
    (:func:`durably.operation.run_async`). A ``def`` job runs whole, with
    :func:`execute`, in ``step_threads``. ``then`` is an operation that must
    not raise, run as the run's end is recorded, so that their writes travel
    together (the asyncio engine claims its next run so: one round trip to
    the database for both).
    """
    job = _job_of(runtime, claimed)
    if job is None or not job.is_async:
        return await run_in(step_threads, _and_then, runtime, execute, (runtime, claimed), then)
    execution = Execution(runtime, claimed, is_async=True, step_threads=step_threads)
    runtime.leases.add(execution.lease)
    runtime.heartbeat.ensure_running()
    try:
        found = execution.find_job()  # on the loop: only a failure touches the database
        if isinstance(found, str):
            return await _record(runtime, _called(execution.fail, found), then)
        job, job_input = found
        started = time.monotonic()
        try:
            async_fn = cast("AsyncJobFunction[Any, Any]", job.fn)
            output = await async_fn(AsyncStepContext(execution), job_input)
        except BaseException as exc:
            await execution.flush()
            return await _record(runtime, _called(execution.settle_error, exc), then)
        await execution.flush()
        return await _record(runtime, execution.settle_output_op(output, started), then)
    finally:
        runtime.leases.remove(execution.lease)


def _and_then(
    runtime: Runtime,
    record: Callable[..., Outcome],
    args: tuple[Any, ...],
    then: Callable[[], Operation[None]] | None,
) -> Outcome:
    """``record(*args)``, then the operation ``then()``, in this thread."""
    outcome = record(*args)
    if then is not None:
        operation.run(then(), runtime.db)
    return outcome


async def _record(
    runtime: Runtime, record: Operation[Outcome], then: Callable[[], Operation[None]] | None
) -> Outcome:
    """Run ``record`` and, beside it, the operation ``then()``: their writes share a trip."""
    if then is None:
        return await operation.run_async(record, runtime)
    # Started first, so that its write is queued in this turn of the loop,
    # with the record's (durably.loop_commit sends a turn's writes together).
    beside = asyncio.ensure_future(operation.run_async(then(), runtime))
    try:
        return await operation.run_async(record, runtime)
    finally:
        await beside


def _called(fn: Callable[..., Outcome], *args: Any) -> Operation[Outcome]:
    """A blocking call as an operation (a database thread runs it, under an event loop)."""
    outcome: Outcome = yield Call(fn, args)
    return outcome
