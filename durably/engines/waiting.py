"""Durable waits inside a run: ``step.prepare_wait``, ``step.wait_for``, ``step.sleep``.

A job that must wait (for a signal, for a deadline, for the end of a sleep)
does not wait in a worker. ``wait_for`` raises :class:`Suspended`, which
unwinds the job function like an exception no ``except Exception`` catches;
the worker then records the suspension as the run's outcome of this
execution (:func:`suspend_op`): the run becomes ``waiting``, gives up its
lease, and the worker's slot takes its next run in the same transaction.
When the run is claimed again its job is replayed from the start, as after
a crash: completed steps return their stored results, ``prepare_wait``
returns the same wait, and ``wait_for`` finds the result.

The writes are in :mod:`durably.core.waits`; each is an operation, written
once here for ``def`` jobs (:meth:`RunWaits.wait_for`) and ``async def``
jobs (:meth:`RunWaits.wait_for_async`).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from .. import serialization
from ..clock import to_datetime
from ..core import operation
from ..core import waits as store
from ..core.leases import AbortReason
from ..core.operation import Operation
from ..errors import CancelledError, ConflictError, DurablyError, LeaseLostError, ValidationError
from ..events import EventType
from ..ids import new_id
from ..status import RunStatus, WaitStatus
from ..waits import Wait, WaitResult
from .execution import Execution
from .outcomes import Outcome


class Suspended(BaseException):
    """The run must wait for ``wait``: the job unwinds and the worker suspends the run.

    A ``BaseException``, so that a job's ``except Exception`` does not catch
    it and go on with a run it is about to give up.
    """

    def __init__(self, wait: Wait, remaining_ms: int | None) -> None:
        super().__init__(wait.id)
        self.wait = wait
        self.remaining_ms = remaining_ms
        """Until the deadline, by the database's clock; None: no deadline."""


def duration_ms(value: float | timedelta, what: str, *, allow_zero: bool = False) -> int:
    """A duration given in seconds or as a ``timedelta``, in whole milliseconds (rounded up)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValidationError(f"{what} must be a number of seconds or a timedelta")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValidationError(f"{what} must be {'' if allow_zero else 'more than '}0 seconds")
    ms = math.ceil(seconds * 1000)
    if ms > 100 * 365 * 86_400_000:
        raise ValidationError(f"{what} must be at most a hundred years")
    return ms


class RunWaits:
    """The durable waits of one executing run: what its step context calls."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution

    # -- the API, for def jobs and async def jobs ---------------------------

    def prepare_wait(self, name: str, timeout: float | timedelta | None, metadata: Any) -> Wait:
        op = self._prepare_op(name, store.SIGNAL, _timeout_ms(timeout), metadata)
        return operation.run(op, self.execution.runtime.db)

    async def prepare_wait_async(
        self, name: str, timeout: float | timedelta | None, metadata: Any
    ) -> Wait:
        op = self._prepare_op(name, store.SIGNAL, _timeout_ms(timeout), metadata)
        return await operation.run_async(op, self.execution.runtime.async_db)

    def wait_for(self, wait: Wait) -> WaitResult:
        return operation.run(self._wait_for_op(wait), self.execution.runtime.db)

    async def wait_for_async(self, wait: Wait) -> WaitResult:
        return await operation.run_async(self._wait_for_op(wait), self.execution.runtime.async_db)

    def sleep(self, name: str, duration: float | timedelta) -> None:
        operation.run(self._sleep_op(name, duration), self.execution.runtime.db)

    async def sleep_async(self, name: str, duration: float | timedelta) -> None:
        await operation.run_async(self._sleep_op(name, duration), self.execution.runtime.async_db)

    # -- the operations -------------------------------------------------------

    def _sleep_op(self, name: str, duration: float | timedelta) -> Operation[None]:
        ms = duration_ms(duration, "A sleep's duration", allow_zero=True)
        wait = yield from self._prepare_op(name, store.SLEEP, ms, None)
        yield from self._wait_for_op(wait)

    def _prepare_op(
        self, name: str, kind: str, timeout_ms: int | None, metadata: Any
    ) -> Operation[Wait]:
        """The run's wait called ``name``: stored now, or found (a replay gets the same one)."""
        if not isinstance(name, str) or not name:
            raise ValidationError("A wait name must be a non-empty string")
        metadata_json = (
            None
            if metadata is None
            else serialization.store(
                self.execution.runtime.serializer, metadata, what="Wait metadata"
            )
        )
        yield from self._at_boundary_op()
        execution = self.execution
        lease = execution.lease
        row, created = yield from store.prepare_op(
            lease, new_id(), name, kind, timeout_ms, metadata_json
        )
        if row is None:
            raise (yield from self._refused_op())
        if row["kind"] != kind:
            raise ValidationError(f"{name!r} already names a {row['kind']} of this run")
        wait = Wait.from_row(row, serializer=self.execution.runtime.serializer)
        if created:
            self._emit(EventType.WAIT_PREPARED, wait, data=wait.metadata)
        return wait

    def _wait_for_op(self, wait: Wait) -> Operation[WaitResult]:
        """The wait's result; without one yet, :class:`Suspended` (the run waits for it)."""
        if not isinstance(wait, Wait):
            raise ValidationError("wait_for takes the Wait that step.prepare_wait returned")
        if wait.run_id != self.execution.lease.run_id:
            raise ValidationError(f"Wait {wait.id} belongs to another run")
        yield from self._at_boundary_op()
        lease = self.execution.lease
        for _ in range(2):  # a timeout another write beat us to is read again once
            row = yield operation.Read(store.read_wait, (wait.id,))
            if row is None:
                raise (yield from self._refused_op())
            current = Wait.from_row(row, serializer=self.execution.runtime.serializer)
            if current.is_resolved:
                return (yield from self._resumed_op(current))
            if current.status == WaitStatus.CANCELLED:
                raise (yield from self._refused_op())
            deadline = row["deadline_at"]
            if deadline is None or row["db_now"] < deadline:
                raise Suspended(current, None if deadline is None else deadline - row["db_now"])
            if (yield from store.time_out_op(lease, wait.id)):
                self._emit(EventType.WAIT_TIMED_OUT, current)
                return WaitResult("timeout")
        raise (yield from self._refused_op())

    def _resumed_op(self, wait: Wait) -> Operation[WaitResult]:
        """A wait with its result: note when the run first got past it, once."""
        if wait.suspended_at is not None and wait.resumed_at is None:
            yield from store.mark_resumed_op(self.execution.lease, wait.id)
        result = wait.result
        assert result is not None
        return result

    def _at_boundary_op(self) -> Operation[None]:
        """Waits stand between steps: not inside a step's function, and only while the lease holds."""
        execution = self.execution
        if execution.current_step is not None:
            raise ValidationError(
                "Durable waits go between steps, not inside a step's function "
                f"(step {execution.current_step!r} is running)"
            )
        if execution.lease.expired_locally:
            yield from execution.confirm_lease_op()
        execution.check_abort()

    def _refused_op(self) -> Operation[DurablyError]:
        """A fenced wait write matched nothing: the run was cancelled, or the lease is lost."""
        lease = self.execution.lease
        status = yield from self.execution.runtime.service.run_status_op(lease.run_id)
        if status == RunStatus.CANCELLED.value:
            lease.abort(AbortReason.CANCELLED)
            return CancelledError(lease.run_id)
        if status == RunStatus.LEASED.value:  # ours, yet the wait is closed: a cancelled one
            return ConflictError(f"A wait of run {lease.run_id} was closed when it was cancelled")
        lease.abort(AbortReason.LEASE_LOST)
        return LeaseLostError(lease.run_id)

    def _emit(self, event_type: EventType, wait: Wait, **fields: Any) -> None:
        _emit(self.execution, event_type, wait, **fields)


def suspend_op(execution: Execution, suspended: Suspended) -> Operation[Outcome]:
    """Record the run's suspension: ``waiting`` until its wait ends, no lease, no slot (fenced).

    The wait's time left (by the database's clock) becomes a ``run_at`` on
    this worker's clock, the clock claims compare with.
    """
    runtime, lease, wait = execution.runtime, execution.lease, suspended.wait
    now = runtime.clock()
    remaining = suspended.remaining_ms
    wake_at = store.NEVER if remaining is None else now + remaining
    run_at = yield from store.suspend_op(lease, now, wait.id, wake_at)
    if run_at is None:
        status = yield from runtime.service.run_status_op(lease.run_id)
        if status == RunStatus.CANCELLED.value:
            return "cancelled"
        runtime.events.emit(
            EventType.WORKER_ERROR,
            run_id=lease.run_id,
            job_name=lease.job_name,
            error=str(LeaseLostError(lease.run_id)),
            exception=LeaseLostError(lease.run_id),
            context="run-waiting",
        )
        return "lease-lost"
    if run_at < store.NEVER:
        runtime.due_times.add(run_at)  # a local worker wakes for it
    _emit(
        execution,
        EventType.RUN_WAITING,
        wait,
        run_at=None if run_at >= store.NEVER else to_datetime(run_at),
    )
    return "waiting"


def _emit(execution: Execution, event_type: EventType, wait: Wait, **fields: Any) -> None:
    lease = execution.lease
    execution.runtime.events.emit(
        event_type,
        run_id=lease.run_id,
        job_name=lease.job_name,
        labels=lease.labels,
        wait_id=wait.id,
        wait_name=wait.name,
        **fields,
    )


def _timeout_ms(timeout: float | timedelta | None) -> int | None:
    return None if timeout is None else duration_ms(timeout, "A wait's timeout")
