"""``Durably``: the object an application creates, registers jobs on and runs workers from."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from . import config, operation, serialization
from . import migrate as migrations
from . import runs as run_store
from .after_commit import call_after_commit
from .bridge import threadsafe_setter, wait_event
from .clock import now_ms, to_datetime, to_ms
from .database import Database, display_url, url_from_env
from .errors import (
    CancelledError,
    ConflictError,
    NotFoundError,
    RunFailedError,
    ValidationError,
)
from .events import TERMINAL_EVENTS, ErrorHandler, Event, EventBus, EventType, Listener
from .execution import execute, execute_async
from .ids import new_id
from .jobs import (
    AsyncJobFunction,
    Job,
    JobDecorator,
    JobFunction,
    build_request,
    validate_labels,
)
from .leases import AbortReason, LeaseService, list_workers
from .models import LogEntry, QueueStats, Run, Step, WorkerInfo
from .replica import Replica, ReplicaReader
from .runs import Enqueued, EnqueueRequest, RunFilter
from .runtime import Runtime
from .status import Disposition, RunStatus
from .workers.asyncio import AsyncioWorker
from .workers.threads import ThreadWorker

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


def default_worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:].lower()}"


class Durably:
    """Durable jobs on one SQLite/libSQL database.

    ::

        durably = Durably("sqlite:///app.db")

        @durably.job("sync-users")
        def sync_users(step, input):
            users = step.run("fetch", lambda: fetch(input["org"]))
            step.run("save", lambda: save(users))
            return {"synced": len(users)}

        durably.migrate()
        durably.start()
        sync_users.trigger({"org": "acme"})

    All intervals are in seconds. ``stale_threshold`` is the lease: a run
    whose worker has not renewed it (heartbeat) for that long may be
    reclaimed by any worker, which replays its completed steps.

    ``url`` is a local file (``sqlite:///app.db``, ``sqlite+libsql:///app.db``)
    or a remote libSQL server (``sqlite+libsql://HOST?secure=true``, or
    ``libsql://HOST`` as Turso prints it) with its ``auth_token``. With a
    remote server, ``replica`` (a path or a :class:`Replica`) serves the read
    API from an embedded replica; everything else stays on the server.
    """

    @classmethod
    def from_env(cls, *, default_url: str | None = None, **options: Any) -> Durably:
        """A ``Durably`` on the database named by the environment.

        Reads ``DURABLY_DATABASE_URL`` and ``DURABLY_AUTH_TOKEN``, or Turso's
        ``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN``; ``default_url`` is
        used when neither URL is set. ``options`` are the constructor's.
        """
        import os

        url, token = url_from_env(os.environ, default_url)
        if token is not None:
            options.setdefault("auth_token", token)
        return cls(url, **options)

    def __init__(
        self,
        url: str | URL,
        *,
        polling_interval: float = config.DEFAULT_POLLING_INTERVAL,
        heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
        stale_threshold: float = config.DEFAULT_STALE_THRESHOLD,
        max_concurrent_runs: int = config.DEFAULT_MAX_CONCURRENT_RUNS,
        preserve_steps: bool = False,
        retain_runs: timedelta | str | None = None,
        lock_timeout: float = config.DEFAULT_LOCK_TIMEOUT,
        synchronous: str = "NORMAL",
        worker_id: str | None = None,
        auth_token: str | None = None,
        replica: str | os.PathLike[str] | Replica | None = None,
    ) -> None:
        settings = config.Settings.build(
            polling_interval=polling_interval,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            max_concurrent_runs=max_concurrent_runs,
            preserve_steps=preserve_steps,
            retain_runs=retain_runs,
            lock_timeout=lock_timeout,
        )
        db = Database(
            url,
            pool_size=max_concurrent_runs + 4,
            lock_timeout=settings.lock_timeout,
            synchronous=synchronous,
            auth_token=auth_token,
        )
        self._runtime = Runtime(
            settings=settings, db=db, service=LeaseService(db, settings), events=EventBus()
        )
        self._reads: Database | ReplicaReader = db
        """Where the read API reads: the database, or its embedded replica."""
        if replica is not None:
            if not db.remote:
                raise ValidationError(
                    "A replica follows a remote libSQL server; this database is a local file"
                )
            if not isinstance(replica, Replica):
                replica = Replica(replica)
            self._reads = ReplicaReader(replica, db)
        self.worker_id = worker_id or default_worker_id()
        self._worker: ThreadWorker | AsyncioWorker | None = None
        self._schema_checked = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Durably {display_url(self._runtime.db.url)!r}>"

    @property
    def settings(self) -> config.Settings:
        return self._runtime.settings

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine durably uses (e.g. to open a connection for transactional enqueue)."""
        return self._runtime.db.engine

    # -- jobs -----------------------------------------------------------------

    @overload
    def job(self, name: str) -> JobDecorator: ...

    @overload
    def job(self, name: AsyncJobFunction[InputT, OutputT]) -> Job[InputT, OutputT]: ...

    @overload
    def job(self, name: JobFunction[InputT, OutputT]) -> Job[InputT, OutputT]: ...

    def job(self, name: Any) -> Any:
        """Register a job: ``@durably.job("name")`` (or bare ``@durably.job``: the function name).

        The function may be ``def job(step, input)`` or ``async def job(step,
        input)``; either engine runs either kind.
        """
        if callable(name):
            return self._register(name.__name__, name)

        def decorator(fn: Any) -> Any:
            return self._register(name, fn)

        return decorator

    def _register(self, name: str, fn: Any) -> Job[Any, Any]:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValidationError("A job name must be a non-empty string of at most 255 characters")
        registry = self._runtime.registry
        existing = registry.get(name)
        if existing is not None:
            if existing.fn is fn:
                return existing
            raise ValidationError(f'Job "{name}" is already registered with a different function')
        job: Job[Any, Any] = Job(self, name, fn)
        registry[name] = job
        return job

    def get_job(self, name: str) -> Job[Any, Any] | None:
        return self._runtime.registry.get(name)

    @property
    def jobs(self) -> Mapping[str, Job[Any, Any]]:
        return dict(self._runtime.registry)

    # -- schema -----------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade durably's tables (Alembic ``upgrade head``). Idempotent."""
        migrations.upgrade(self._runtime.db)
        self._schema_checked = True

    async def migrate_async(self) -> None:
        await self._runtime.call(self.migrate)

    def _ensure_schema(self) -> None:
        if not self._schema_checked:
            migrations.check(self._runtime.db)
            self._schema_checked = True

    # -- worker engines -----------------------------------------------------------

    def start(self) -> None:
        """Start the thread worker engine in the background; returns at once.

        For WSGI apps and scripts. In an asyncio app use :meth:`start_async`.
        """
        with self._lock:
            if self._claim_engine("thread"):
                return
            self._ensure_schema()
            worker = ThreadWorker(self._runtime, self.worker_id)
            worker.start()
            self._worker = worker

    async def start_async(self) -> None:
        """Start the asyncio worker engine: tasks in the running event loop; returns at once.

        For ASGI apps (call it in the lifespan) and async scripts.
        """
        with self._lock:
            if self._claim_engine("asyncio"):
                return
            worker = AsyncioWorker(self._runtime, self.worker_id)
            self._worker = worker
        try:
            await self._runtime.call(self._ensure_schema)
            await worker.start()
        except BaseException:
            with self._lock:
                if self._worker is worker:
                    self._worker = None
            raise

    def _claim_engine(self, engine: str) -> bool:
        """True if this engine already runs; ConflictError if the other one does."""
        worker = self._worker
        if worker is None or not worker.running:
            return False
        if worker.engine != engine:
            raise ConflictError(
                f"The {worker.engine} engine is already running; stop it before starting {engine}"
            )
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread engine: no more claims; wait for in-flight runs.

        Runs still going after ``timeout`` seconds are asked to stop at their
        next step boundary and their leases released, so another worker
        resumes them at once from their completed steps.
        """
        with self._lock:
            worker = self._worker
            if isinstance(worker, AsyncioWorker):
                raise ConflictError("The asyncio engine is running: use await stop_async()")
            self._worker = None
        if worker is not None:
            worker.stop(timeout)

    async def stop_async(self, timeout: float | None = None) -> None:
        """Stop the asyncio engine (same policy as :meth:`stop`)."""
        with self._lock:
            worker = self._worker
            if isinstance(worker, ThreadWorker):
                raise ConflictError("The thread engine is running: use stop()")
            self._worker = None
        if worker is not None:
            await worker.stop(timeout)

    @property
    def is_running(self) -> bool:
        return self._worker is not None and self._worker.running

    @property
    def engine_name(self) -> str | None:
        """``"thread"``, ``"asyncio"`` or None: the engine this instance runs now."""
        return self._worker.engine if self.is_running and self._worker is not None else None

    def close(self) -> None:
        """Stop the thread engine and the heartbeat, and close the database connections."""
        self.stop()
        self._close_connections()

    def _close_connections(self) -> None:
        self._runtime.close()
        if self._reads is not self._runtime.db:
            self._reads.dispose()

    async def close_async(self) -> None:
        """Stop the asyncio engine, then release threads and connections (off the loop)."""
        await self.stop_async()
        await asyncio.to_thread(self._close_connections)

    def __enter__(self) -> Durably:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Durably:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close_async()

    # -- serverless processing ------------------------------------------------------

    def process_one(self) -> bool:
        """Claim one run and execute it in this thread. False if nothing was claimable.

        The serverless primitive: no background worker needed. An ``async
        def`` job runs on durably's event-loop thread while this one waits.
        """
        self._ensure_schema()
        claimed = self._runtime.service.claim(self.worker_id)
        if claimed is None:
            return False
        execute(self._runtime, claimed)
        return True

    async def process_one_async(self) -> bool:
        """Claim one run and await it in the running loop (``def`` jobs run in a thread)."""
        runtime = self._runtime
        await runtime.call(self._ensure_schema)
        claimed = await operation.run_async(runtime.service.claim_op(self.worker_id), runtime)
        if claimed is None:
            return False
        await execute_async(runtime, claimed)
        return True

    def process_until_idle(self, max_runs: int | None = None) -> int:
        """Process runs until none is claimable (or ``max_runs``); returns how many ran.

        Idle maintenance (stale reaper, retention purge) runs only when the
        queue was actually drained.
        """
        _check_max_runs(max_runs)
        count = 0
        while max_runs is None or count < max_runs:
            if not self.process_one():
                self._runtime.service.run_maintenance(force=True)
                break
            count += 1
        return count

    async def process_until_idle_async(self, max_runs: int | None = None) -> int:
        _check_max_runs(max_runs)
        count = 0
        while max_runs is None or count < max_runs:
            if not await self.process_one_async():
                await self._runtime.call(self._runtime.service.run_maintenance, force=True)
                break
            count += 1
        return count

    # -- triggering -------------------------------------------------------------

    def _enqueue(
        self, requests: Sequence[EnqueueRequest], connection: Connection | None
    ) -> list[Run]:
        self._ensure_schema()
        now = now_ms()
        if connection is not None:
            self._runtime.db.check_caller_connection(connection)
            enqueued = run_store.enqueue_many(connection, requests, now)
        else:
            db = self._runtime.db
            enqueued = operation.run(run_store.enqueue_op(db, requests, now), db)
        runs = _returned(enqueued, now)
        if connection is None:
            self._announce(requests, runs)
        else:
            # The runs exist only once the caller's COMMIT has returned: announce them then.
            def committed() -> None:
                self._runtime.db.count_write()
                self._announce(requests, runs)

            call_after_commit(connection, committed)
        return runs

    def _announce(self, requests: Sequence[EnqueueRequest], runs: Sequence[Run]) -> None:
        """Emit trigger events for committed runs and wake the local workers."""
        events = self._runtime.events
        dispositions = [run.disposition for run in runs]
        if events.listens_to(EventType.RUN_TRIGGER, EventType.RUN_COALESCED):
            self._emit_trigger_events(requests, runs)
        else:
            # The events are numbered all the same, but not made: for a batch
            # of 5,000 runs that spares 3 ms.
            events.pass_over(len(dispositions) - dispositions.count(Disposition.IDEMPOTENT))
        if Disposition.CREATED in dispositions:
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
                    skipped_input=serialization.loads(request["input_json"]),
                    skipped_labels=dict(request["labels"] or {}),
                )

    # -- reading ----------------------------------------------------------------

    # These read from the embedded replica when there is one (see
    # durably.replica). Nothing durably decides may call them: it reads the
    # primary (_current_run).

    def get_run(self, run_id: str) -> Run | None:
        row = self._reads.read(run_store.get_run, run_id)
        return None if row is None else Run.from_row(row)

    def _current_run(self, run_id: str) -> Run | None:
        """The run as the primary has it now, for decisions and waits."""
        row = self._runtime.db.read(run_store.get_run, run_id)
        return None if row is None else Run.from_row(row)

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
        return [Run.from_row(row) for row in rows]

    def get_failed_runs(self, limit: int | None = None) -> list[Run]:
        return self.get_runs(status=RunStatus.FAILED, limit=limit)

    def get_steps(self, run_id: str) -> list[Step]:
        return [Step.from_row(row) for row in self._reads.read(run_store.get_steps, run_id)]

    def get_logs(self, run_id: str) -> list[LogEntry]:
        return [LogEntry.from_row(row) for row in self._reads.read(run_store.get_logs, run_id)]

    def get_queue_stats(self) -> QueueStats:
        """Pending and running run counts and the age of the oldest pending run."""
        counts, oldest = self._reads.read(run_store.queue_stats)
        age = None if oldest is None else timedelta(milliseconds=max(0, now_ms() - oldest))
        return QueueStats(
            pending=counts.get(RunStatus.PENDING.value, 0),
            running=counts.get(RunStatus.LEASED.value, 0),
            oldest_pending_age=age,
        )

    def get_workers(self) -> list[WorkerInfo]:
        """Registered worker engines, live and stale (no heartbeat within ``stale_threshold``)."""
        stale_before = now_ms() - self.settings.lease_ms
        rows = self._reads.read(list_workers)
        return [WorkerInfo.from_row(row, stale_before=stale_before) for row in rows]

    # -- waiting ----------------------------------------------------------------

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
        poll = self.settings.polling_interval if polling_interval is None else polling_interval
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

    # -- changing runs ------------------------------------------------------------

    def cancel(self, run_id: str) -> Run:
        """Cancel a pending or leased run. A running run stops at its next step boundary."""
        self._ensure_schema()
        row = run_store.cancel(self._runtime.db, run_id, now_ms())
        run = Run.from_row(row)
        lease = self._runtime.leases.get(run_id)
        if lease is not None:
            lease.abort(AbortReason.CANCELLED)
        self._runtime.events.emit(
            EventType.RUN_CANCEL, run_id=run.id, job_name=run.job_name, labels=run.labels
        )
        return run

    def delete_run(self, run_id: str) -> None:
        """Delete a terminal run with its steps, logs and labels."""
        self._ensure_schema()
        row = run_store.delete_run(self._runtime.db, run_id)
        run = Run.from_row(row)
        self._runtime.events.emit(
            EventType.RUN_DELETE, run_id=run.id, job_name=run.job_name, labels=run.labels
        )

    def retry(self, run_id: str) -> Run:
        """Resume a failed or cancelled run: back to pending, completed steps kept.

        The next worker replays the completed steps from storage and re-runs
        from the first step that did not complete. Compare :meth:`retrigger`.
        """
        self._ensure_schema()
        row = run_store.retry(self._runtime.db, run_id, now_ms())
        run = Run.from_row(row)
        self._runtime.events.emit(
            EventType.RUN_TRIGGER,
            run_id=run.id,
            job_name=run.job_name,
            labels=run.labels,
            input=run.input,
        )
        self._runtime.wake_workers()
        return run

    def retrigger(self, run_id: str) -> Run:
        """A fresh run (new id) with the same job, input, labels and concurrency key."""
        run = self._current_run(run_id)
        if run is None:
            raise NotFoundError(f"Run not found: {run_id}")
        if run.is_active:
            raise ConflictError(f"Cannot retrigger {run.status} run: {run_id}")
        if run.job_name not in self._runtime.registry:
            raise NotFoundError(f"Unknown job: {run.job_name}")
        request = build_request(
            run.job_name, run.input, concurrency_key=run.concurrency_key, labels=run.labels
        )
        return self._enqueue([request], None)[0]

    def purge_runs(self, older_than: datetime, limit: int = config.DEFAULT_PURGE_LIMIT) -> int:
        """Delete up to ``limit`` terminal runs completed before ``older_than``; returns how many."""
        if not isinstance(older_than, datetime):
            raise ValidationError("older_than must be a datetime")
        if not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive integer")
        self._ensure_schema()
        return run_store.purge(self._runtime.db, to_ms(older_than), limit)

    # -- async twins ------------------------------------------------------------
    # The same operations as above, run in durably's database threads so that
    # an event loop never waits on SQLite (see Runtime.call).

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

    async def get_logs_async(self, run_id: str) -> list[LogEntry]:
        return await self._runtime.call(self.get_logs, run_id)

    async def get_queue_stats_async(self) -> QueueStats:
        return await self._runtime.call(self.get_queue_stats)

    async def get_workers_async(self) -> list[WorkerInfo]:
        return await self._runtime.call(self.get_workers)

    async def cancel_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.cancel, run_id)

    async def delete_run_async(self, run_id: str) -> None:
        await self._runtime.call(self.delete_run, run_id)

    async def retry_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.retry, run_id)

    async def retrigger_async(self, run_id: str) -> Run:
        return await self._runtime.call(self.retrigger, run_id)

    async def purge_runs_async(
        self, older_than: datetime, limit: int = config.DEFAULT_PURGE_LIMIT
    ) -> int:
        return await self._runtime.call(self.purge_runs, older_than, limit)

    async def _enqueue_async(self, requests: Sequence[EnqueueRequest]) -> list[Run]:
        """:meth:`_enqueue`'s write from the event loop: it travels with the loop's other writes."""
        runtime = self._runtime
        if not self._schema_checked:
            await runtime.call(self._ensure_schema)
        now = now_ms()
        enqueue = run_store.enqueue_op(runtime.db, requests, now)
        runs = _returned(await operation.run_async(enqueue, runtime), now)
        self._announce(requests, runs)
        return runs

    # -- events -----------------------------------------------------------------

    def on(self, event_type: EventType | str | None, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event of that type; returns an unsubscribe function.

        ``event_type=None`` listens to every event.
        """
        return self._runtime.events.on(event_type, listener)

    def on_error(self, handler: ErrorHandler | None) -> None:
        """Where exceptions raised by event listeners go (default: logged)."""
        self._runtime.events.on_error = handler


def _returned(enqueued: Enqueued, now: int) -> list[Run]:
    """The runs a trigger returns, from what :func:`durably.runs.enqueue_op` returned."""
    created_at = to_datetime(now)
    rows, dispositions = enqueued
    return [
        Run.from_written(row, created_at)
        if disposition is Disposition.CREATED
        else Run.from_row(row, disposition)
        for row, disposition in zip(rows, dispositions, strict=False)  # made together
    ]


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


def _check_max_runs(max_runs: int | None) -> None:
    if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 0):
        raise ValidationError("max_runs must be a non-negative integer")


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
