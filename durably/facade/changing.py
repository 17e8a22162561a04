"""Changing runs from outside a lease: cancel, retry, retrigger, delete, purge."""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import config
from ..bridge import blocking
from ..clock import now_ms, to_ms
from ..core import operation
from ..core import runs as run_store
from ..core.leases import AbortReason
from ..errors import ConflictError, NotFoundError, ValidationError
from ..events import EventType
from ..jobs import build_request
from ..models import Run
from .triggering import Triggering


class Changing(Triggering):
    @blocking
    def cancel(self, run_id: str) -> Run:
        """Cancel a pending, leased or waiting run. A running run stops at its next step boundary."""
        self._ensure_schema()
        row = operation.run(run_store.cancel_op(run_id, now_ms()), self._runtime.db)
        run = Run.from_row(row, serializer=self._runtime.serializer)
        lease = self._runtime.leases.get(run_id)
        if lease is not None:
            lease.abort(AbortReason.CANCELLED)
        self._runtime.events.emit(
            EventType.RUN_CANCEL, run_id=run.id, job_name=run.job_name, labels=run.labels
        )
        return run

    @blocking
    def delete_run(self, run_id: str) -> None:
        """Delete a terminal run with its steps, logs and labels."""
        self._ensure_schema()
        row = operation.run(run_store.delete_op(run_id), self._runtime.db)
        run = Run.from_row(row, serializer=self._runtime.serializer)
        self._runtime.events.emit(
            EventType.RUN_DELETE, run_id=run.id, job_name=run.job_name, labels=run.labels
        )

    @blocking
    def retry(self, run_id: str) -> Run:
        """Resume a failed or cancelled run: back to pending, completed steps kept.

        The next worker replays the completed steps from storage and re-runs
        from the first step that did not complete. Compare :meth:`retrigger`.
        """
        self._ensure_schema()
        row = operation.run(run_store.retry_op(run_id, self._runtime.clock()), self._runtime.db)
        run = Run.from_row(row, serializer=self._runtime.serializer)
        self._runtime.events.emit(
            EventType.RUN_TRIGGER,
            run_id=run.id,
            job_name=run.job_name,
            labels=run.labels,
            input=run.input,
        )
        self._runtime.wake_workers()
        return run

    @blocking
    def retrigger(self, run_id: str) -> Run:
        """A fresh run (new id) with the same job, input, labels and concurrency key."""
        return self._retrigger(run_id, registered_only=True)

    def _retrigger(self, run_id: str, *, registered_only: bool) -> Run:
        """:meth:`retrigger`; without ``registered_only``, also a run of a job not registered here.

        The command line works from the database alone, without the app's jobs: the new
        run copies everything it needs (queue and priority too) from the old one.
        """
        run = self._current_run(run_id)
        if run is None:
            raise NotFoundError(f"Run not found: {run_id}")
        if run.is_active:
            raise ConflictError(f"Cannot retrigger {run.status} run: {run_id}")
        if registered_only and run.job_name not in self._registry:
            raise NotFoundError(f"Unknown job: {run.job_name}")
        request = build_request(
            run.job_name,
            run.input,
            concurrency_key=run.concurrency_key,
            labels=run.labels,
            queue=run.queue,
            priority=run.priority,
            serializer=self._runtime.serializer,
        )
        return self.enqueue([request])[0]

    @blocking
    def purge_runs(
        self, older_than: datetime | timedelta | str, limit: int = config.DEFAULT_PURGE_LIMIT
    ) -> int:
        """Delete up to ``limit`` terminal runs completed before ``older_than``; returns how many.

        ``older_than`` is a moment (an aware ``datetime``) or an age: a
        ``timedelta`` or a duration as ``retain_runs`` takes it (``"30d"``),
        so that "purge last month" is written the same way everywhere.
        """
        cutoff = self._purge_cutoff(older_than)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive integer")
        self._ensure_schema()
        return operation.run(run_store.purge_op(cutoff, limit), self._runtime.db)

    def _purge_cutoff(self, older_than: datetime | timedelta | str) -> int:
        """``older_than`` as milliseconds since the epoch (a naive datetime is refused: which
        zone would it be in?)."""
        if isinstance(older_than, datetime):
            if older_than.tzinfo is None or older_than.utcoffset() is None:
                raise ValidationError(
                    "older_than must be timezone-aware, e.g. datetime.now(timezone.utc)"
                )
            return to_ms(older_than)
        if isinstance(older_than, (timedelta, str)):
            age = config.parse_duration(older_than, "older_than")
            return self._runtime.clock() - int(age.total_seconds() * 1000)
        raise ValidationError(
            'older_than must be an aware datetime, a timedelta or a duration such as "30d", '
            f"got {older_than!r}"
        )

    # -- async twins: the same changes, run in a database thread

    async def cancel_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.cancel, run_id)

    async def delete_run_async(self, run_id: str) -> None:
        await self._runtime.call(self.delete_run, run_id)

    async def retry_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.retry, run_id)

    async def retrigger_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.retrigger, run_id)

    async def purge_runs_async(
        self, older_than: datetime | timedelta | str, limit: int = config.DEFAULT_PURGE_LIMIT
    ) -> int:
        return await self._runtime.call(self.purge_runs, older_than, limit)
