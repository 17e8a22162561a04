"""Creating runs: what ``Job.trigger`` and ``Job.batch_trigger`` (and their twins) call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import Connection

from .. import serialization
from ..after_commit import call_after_commit
from ..clock import to_datetime
from ..core import operation
from ..core.enqueue import Enqueued, EnqueueRequest, claimable_at, enqueue_many, enqueue_op
from ..errors import ValidationError
from ..events import EventType
from ..models import Run
from ..serialization import Serializer
from ..status import Disposition
from .base import FacadeBase

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

C = TypeVar("C")


class Triggering(FacadeBase):
    def enqueue(
        self, requests: Sequence[EnqueueRequest], connection: Connection | None = None
    ) -> list[Run]:
        """Write validated trigger requests (``jobs.build_request``); the runs they resolve to.

        With ``connection``, on the caller's connection and transaction: the
        runs are announced once the caller's ``COMMIT`` has returned.
        """
        instrumentation = self._runtime.instrumentation
        if instrumentation is None:
            return self._enqueue(requests, connection, None)
        with instrumentation.trigger(*_traced(requests)) as trace_context:
            return self._enqueue(requests, connection, trace_context)

    def _enqueue(
        self,
        requests: Sequence[EnqueueRequest],
        connection: Connection | None,
        traced: str | None,
    ) -> list[Run]:
        self._ensure_schema()
        if connection is not None:
            instead = (
                "an AsyncConnection goes to trigger_async; a Session's is session.connection()"
            )
            return self._enqueue_on(_checked(connection, Connection, instead), requests, traced)
        now = self._runtime.clock()
        enqueued = operation.run(enqueue_op(requests, now, traced), self._runtime.db)
        runs = _returned(enqueued, now, self._runtime.serializer)
        self._announce(requests, runs, now)
        return runs

    def _enqueue_on(
        self, connection: Connection, requests: Sequence[EnqueueRequest], traced: str | None
    ) -> list[Run]:
        """Write the runs in the caller's transaction; announce them once it has committed.

        For an ``AsyncConnection`` this runs inside its ``run_sync``: each
        statement is awaited on the caller's async driver, so the loop is not
        blocked, and the announcement runs on the loop as ``trigger_async``'s does.
        """
        self._runtime.db.check_caller_connection(connection)
        now = self._runtime.clock()
        enqueued = enqueue_many(connection, requests, now, traced)
        runs = _returned(enqueued, now, self._runtime.serializer)

        def committed() -> None:
            self._runtime.db.count_write()
            self._announce(requests, runs, now)

        call_after_commit(connection, committed)
        return runs

    async def enqueue_async(
        self, requests: Sequence[EnqueueRequest], connection: AsyncConnection | None = None
    ) -> list[Run]:
        """:meth:`enqueue` from the event loop: the write travels with the loop's other writes,
        or, with ``connection``, in the caller's async transaction."""
        instrumentation = self._runtime.instrumentation
        if instrumentation is None:
            return await self._enqueue_async(requests, connection, None)
        with instrumentation.trigger(*_traced(requests)) as trace_context:
            return await self._enqueue_async(requests, connection, trace_context)

    async def _enqueue_async(
        self,
        requests: Sequence[EnqueueRequest],
        connection: AsyncConnection | None,
        traced: str | None,
    ) -> list[Run]:
        runtime = self._runtime
        if not self._schema_checked:
            await runtime.call(self._ensure_schema)
        if connection is not None:
            from sqlalchemy.ext.asyncio import AsyncConnection  # only when an app passes one

            instead = (
                "an AsyncSession's is `await session.connection()`; a Connection goes to trigger"
            )
            checked = _checked(connection, AsyncConnection, instead)
            return await checked.run_sync(self._enqueue_on, requests, traced)
        now = runtime.clock()
        write = enqueue_op(requests, now, traced)
        enqueued = await operation.run_async(write, runtime.async_db)
        runs = _returned(enqueued, now, runtime.serializer)
        self._announce(requests, runs, now)
        return runs

    def _announce(self, requests: Sequence[EnqueueRequest], runs: Sequence[Run], now: int) -> None:
        """Emit trigger events for committed runs and wake the local workers."""
        events = self._runtime.events
        dispositions = [run.disposition for run in runs]
        if events.listens_to(EventType.RUN_TRIGGER, EventType.RUN_COALESCED):
            self._emit_trigger_events(requests, runs)
        else:
            # Numbered all the same, but not made: a big batch makes many.
            events.pass_over(len(dispositions) - dispositions.count(Disposition.IDEMPOTENT))
        if Disposition.CREATED in dispositions:
            due_times = self._runtime.due_times
            for request in requests:
                if request["delay_ms"] or request["run_at"] is not None:
                    # delayed: wake a worker when it comes due
                    due_times.add(claimable_at(request, now))
            self._runtime.wake_workers()

    def _emit_trigger_events(self, requests: Sequence[EnqueueRequest], runs: Sequence[Run]) -> None:
        """``run:trigger`` for each created run, ``run:coalesced`` for each coalesced one."""
        events = self._runtime.events
        for request, run in zip(requests, runs, strict=True):
            if run.disposition is Disposition.CREATED:
                events.emit(
                    EventType.RUN_TRIGGER,
                    run_id=run.id,
                    job_name=run.job_name,
                    labels=run.labels,
                    input=run.input,
                )
            elif run.disposition is Disposition.COALESCED:
                events.emit(
                    EventType.RUN_COALESCED,
                    run_id=run.id,
                    job_name=run.job_name,
                    labels=run.labels,
                    skipped_input=serialization.load(
                        self._runtime.serializer, request["input_json"]
                    ),
                    skipped_labels=dict(request["labels"] or {}),
                )


def _checked(connection: object, kind: type[C], instead: str) -> C:
    """``connection``, if it is the kind this method writes through; else a clear error."""
    if not isinstance(connection, kind):
        raise ValidationError(
            f"connection= takes a SQLAlchemy {kind.__name__}, not {type(connection).__name__}"
            f" ({instead})"
        )
    return connection


def _traced(requests: Sequence[EnqueueRequest]) -> tuple[str, str, int]:
    """What an instrumentation is told of a trigger: its job, its queue, how many runs.

    Every way to trigger many runs at once triggers runs of one job.
    """
    first = requests[0]
    return first["job_name"], first["queue"], len(requests)


def _returned(enqueued: Enqueued, now: int, serializer: Serializer) -> list[Run]:
    """The runs a trigger returns, from what :func:`~durably.core.enqueue.enqueue_op` returned."""
    created_at = to_datetime(now)
    rows, dispositions = enqueued
    return [
        Run.from_written(row, created_at, serializer)
        if disposition is Disposition.CREATED
        else Run.from_row(row, disposition, serializer=serializer)
        for row, disposition in zip(rows, dispositions, strict=True)
    ]
