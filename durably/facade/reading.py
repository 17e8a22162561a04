"""Reading runs, steps, logs, workers and the queue; waiting for a run to end.

These read from the embedded replica when there is one (see
:mod:`durably.storage.replica`). Nothing durably decides may call them: it
reads the primary (``_current_run``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from ..bridge import blocking, threadsafe_setter, wait_event
from ..clock import now_ms
from ..core import runs as run_store
from ..core.maintenance import list_workers
from ..core.runs import RunFilter
from ..errors import CancelledError, NotFoundError, RunFailedError, ValidationError
from ..events import TERMINAL_EVENTS, Event
from ..jobs import validate_labels
from ..models import LogEntry, QueueStats, Run, Step, StepAttempt, WorkerInfo
from ..status import RunStatus
from .base import FacadeBase


class Reading(FacadeBase):
    @blocking
    def get_run(self, run_id: str) -> Run | None:
        row = self._reads.read(run_store.get_run, run_id)
        return None if row is None else Run.from_row(row, serializer=self._runtime.serializer)

    @blocking
    def get_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]:
        """Runs newest first, filtered (statuses OR'd, labels AND'ed)."""
        run_filter = RunFilter(
            status=_statuses(status),
            job_name=_names(job_name),
            labels=_label_filter(labels),
            limit=_non_negative("limit", limit),
            offset=_non_negative("offset", offset) or 0,
        )
        rows = self._reads.read(run_store.list_runs, run_filter)
        return [Run.from_row(row, serializer=self._runtime.serializer) for row in rows]

    @blocking
    def get_failed_runs(self, limit: int | None = None) -> list[Run]:
        return self.get_runs(status=RunStatus.FAILED, limit=limit)

    @blocking
    def get_steps(self, run_id: str) -> list[Step]:
        return [
            Step.from_row(row, serializer=self._runtime.serializer)
            for row in self._reads.read(run_store.get_steps, run_id)
        ]

    @blocking
    def get_step_attempts(self, run_id: str) -> list[StepAttempt]:
        """Every call of the run's step functions, oldest first; [] for an unknown run.

        Replayed steps make no attempt. Attempts outlive the clean-up of a
        completed run's steps and are deleted with the run.
        """
        rows = self._reads.read(run_store.get_step_attempts, run_id)
        return [StepAttempt.from_row(row) for row in rows]

    @blocking
    def get_logs(self, run_id: str) -> list[LogEntry]:
        return [
            LogEntry.from_row(row, serializer=self._runtime.serializer)
            for row in self._reads.read(run_store.get_logs, run_id)
        ]

    @blocking
    def get_queue_stats(self) -> QueueStats:
        """Pending runs, runs leased by live workers, runs whose lease expired, waiting runs,
        and the age of the oldest pending run.

        A leased run whose lease expired is not running: its worker stopped renewing it
        (died, paused, lost the database) and the run waits to be reclaimed. Counting it
        as running would hide exactly the runs an operator has to look at.
        """
        now = now_ms()
        counts, stale, oldest = self._reads.read(run_store.queue_stats, now)
        age = None if oldest is None else timedelta(milliseconds=max(0, now - oldest))
        return QueueStats(
            pending=counts.get(RunStatus.PENDING.value, 0),
            running=counts.get(RunStatus.LEASED.value, 0) - stale,
            stale=stale,
            oldest_pending_age=age,
            waiting=counts.get(RunStatus.WAITING.value, 0),
        )

    @blocking
    def get_workers(self) -> list[WorkerInfo]:
        """Registered worker engines, live and stale (no heartbeat within ``stale_threshold``)."""
        stale_before = now_ms() - self._runtime.settings.lease_ms
        rows = self._reads.read(list_workers)
        return [WorkerInfo.from_row(row, stale_before=stale_before) for row in rows]

    # -- waiting ----------------------------------------------------------------

    @blocking
    def wait_for_run(
        self, run_id: str, timeout: float | None = None, *, polling_interval: float | None = None
    ) -> Run:
        """Block until the run completes and return it.

        Raises :class:`RunFailedError` (failed), :class:`CancelledError`
        (cancelled), :class:`NotFoundError` (unknown or deleted) and
        ``TimeoutError``. Runs finished in this process wake the wait at once;
        runs finished by other processes are seen by polling.
        """
        poll, deadline = self._wait_params(timeout, polling_interval)
        finished = threading.Event()
        unsubscribe = self._on_finished(run_id, finished.set)
        try:
            while True:
                run = _settled(run_id, self._current_run(run_id))
                if run is not None:
                    return run
                finished.wait(_next_wait(poll, deadline, timeout, run_id))
                finished.clear()
        finally:
            unsubscribe()

    async def wait_for_run_async(
        self, run_id: str, timeout: float | None = None, *, polling_interval: float | None = None
    ) -> Run:
        """:meth:`wait_for_run` for the event loop: awaits without holding a thread."""
        poll, deadline = self._wait_params(timeout, polling_interval)
        finished = asyncio.Event()
        unsubscribe = self._on_finished(run_id, threadsafe_setter(finished))
        try:
            while True:
                run = _settled(run_id, await self._runtime.call(self._current_run, run_id))
                if run is not None:
                    return run
                await wait_event(finished, _next_wait(poll, deadline, timeout, run_id))
                finished.clear()
        finally:
            unsubscribe()

    def _wait_params(
        self, timeout: float | None, polling_interval: float | None
    ) -> tuple[float, float | None]:
        poll = (
            self._runtime.settings.polling_interval
            if polling_interval is None
            else polling_interval
        )
        if poll <= 0:
            raise ValidationError("polling_interval must be positive")
        if timeout is not None and timeout < 0:
            raise ValidationError("timeout must not be negative")
        return poll, None if timeout is None else time.monotonic() + timeout

    def _on_finished(self, run_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when this process sees the run end; returns an unsubscribe."""

        def listener(event: Event) -> None:
            if event.run_id == run_id:
                callback()

        unsubscribes = [self._runtime.events.on(t, listener) for t in TERMINAL_EVENTS]

        def unsubscribe() -> None:
            for remove in unsubscribes:
                remove()

        return unsubscribe

    # -- async twins: the same reads in a database thread, so a loop never waits on SQLite

    async def get_run_async(self, run_id: str) -> Run | None:
        return await self._runtime.call(self.get_run, run_id)

    async def get_runs_async(
        self,
        *,
        status: str | Sequence[str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]:
        return await self._runtime.call(
            self.get_runs,
            status=status,
            job_name=job_name,
            labels=labels,
            limit=limit,
            offset=offset,
        )

    async def get_failed_runs_async(self, limit: int | None = None) -> list[Run]:
        return await self._runtime.call(self.get_failed_runs, limit)

    async def get_steps_async(self, run_id: str) -> list[Step]:
        return await self._runtime.call(self.get_steps, run_id)

    async def get_step_attempts_async(self, run_id: str) -> list[StepAttempt]:
        return await self._runtime.call(self.get_step_attempts, run_id)

    async def get_logs_async(self, run_id: str) -> list[LogEntry]:
        return await self._runtime.call(self.get_logs, run_id)

    async def get_queue_stats_async(self) -> QueueStats:
        return await self._runtime.call(self.get_queue_stats)

    async def get_workers_async(self) -> list[WorkerInfo]:
        return await self._runtime.call(self.get_workers)


def _settled(run_id: str, run: Run | None) -> Run | None:
    """The completed run, None while it is still going; raises if it ended otherwise."""
    if run is None:
        raise NotFoundError(f"Run not found: {run_id}")
    if run.status is RunStatus.COMPLETED:
        return run
    if run.status is RunStatus.FAILED:
        raise RunFailedError(run_id, run.error)
    if run.status is RunStatus.CANCELLED:
        raise CancelledError(run_id)
    return None


def _next_wait(poll: float, deadline: float | None, timeout: float | None, run_id: str) -> float:
    if deadline is None:
        return poll
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"wait_for_run timed out after {timeout:g}s: {run_id}")
    return min(poll, remaining)


def _statuses(status: str | Sequence[str] | None) -> tuple[str, ...]:
    if status is None:
        return ()
    values = [status] if isinstance(status, str) else list(status)
    result = []
    for value in values:
        try:
            result.append(RunStatus(value).value)
        except ValueError:
            valid = ", ".join(s.value for s in RunStatus)
            raise ValidationError(f"Invalid status: {value!r}. Must be one of: {valid}") from None
    return tuple(result)


def _names(job_name: str | Sequence[str] | None) -> tuple[str, ...]:
    if job_name is None:
        return ()
    return (job_name,) if isinstance(job_name, str) else tuple(job_name)


def _label_filter(labels: Mapping[str, str] | None) -> dict[str, str] | None:
    return validate_labels(labels) if labels else None


def _non_negative(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"Invalid {name}: must be a non-negative integer")
    return value
