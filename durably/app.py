"""``Durably``: the object an application creates, registers jobs on and runs workers from.

The facade is put together from parts with one concern each
(:mod:`durably.facade`): registering jobs, triggering, reading and waiting,
changing runs, schedules, durable waits and signals.
This module holds construction, the schema, the worker engines and
serverless processing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL

from . import config
from . import migrate as migrations
from .bridge import blocking, job_loops, refuse_blocking
from .engines.asyncio import AsyncioWorker
from .engines.runtime import Runtime
from .engines.threads import ThreadWorker
from .errors import ConflictError, ValidationError
from .events import ErrorHandler, EventBus, EventType, Listener
from .facade import signals as signal_handlers
from .facade.changing import Changing
from .facade.processing import Processing, check_queues
from .facade.reading import Reading
from .facade.registering import Registering
from .facade.scheduling import Scheduling
from .facade.waits import Waits
from .ids import new_id
from .jobs import Job
from .schema import runs as runs_table
from .serialization import Serializer, check_serializer
from .storage import AnyDatabase, Database, open_database
from .storage.replica import Replica, ReplicaReader
from .storage.urls import display_url, url_from_env

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

LEASE_OWNER_MAX_LENGTH = cast(sa.String, runs_table.c.lease_owner.type).length or 0
"""The longest worker id the runs table stores as a lease owner."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:].lower()}"


def checked_worker_id(worker_id: object) -> str:
    """The worker id to use: the caller's, checked, or a new one.

    It is stored as the lease owner of every run this worker claims, so it
    must be text that fits the column: PostgreSQL would refuse a longer one
    only at the first claim, inside the worker, long after the mistake.
    """
    if worker_id is None:
        return default_worker_id()
    if not isinstance(worker_id, str) or not worker_id.strip():
        raise ValidationError(f"worker_id must be a non-empty string, not {worker_id!r}")
    if len(worker_id) > LEASE_OWNER_MAX_LENGTH:
        raise ValidationError(
            f"worker_id is {len(worker_id)} characters long; at most {LEASE_OWNER_MAX_LENGTH} fit"
        )
    return worker_id


class Durably(Registering, Changing, Reading, Processing, Scheduling, Waits):
    """Durable jobs on one SQLite, libSQL or PostgreSQL database.

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
    ``serializer`` stores your values (inputs, outputs, step results,
    payloads): :class:`~durably.JSONSerializer` by default.
    """

    @classmethod
    def from_env(cls, *, default_url: str | None = None, **options: Any) -> Durably:
        """A ``Durably`` on the database named by the environment.

        Reads ``DURABLY_DATABASE_URL`` and ``DURABLY_AUTH_TOKEN``, or Turso's
        ``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN``; ``default_url`` is
        used when neither URL is set. ``options`` are the constructor's.
        """
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
        max_recoveries: int | None = config.DEFAULT_MAX_RECOVERIES,
        synchronous: str = "NORMAL",
        worker_id: str | None = None,
        auth_token: str | None = None,
        replica: str | os.PathLike[str] | Replica | None = None,
        serializer: Serializer | None = None,
    ) -> None:
        checked_id = checked_worker_id(worker_id)
        settings = config.Settings.build(
            polling_interval=polling_interval,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            max_concurrent_runs=max_concurrent_runs,
            preserve_steps=preserve_steps,
            retain_runs=retain_runs,
            lock_timeout=lock_timeout,
            max_recoveries=max_recoveries,
        )
        db = open_database(
            url,
            pool_size=max_concurrent_runs + 4,
            lock_timeout=settings.lock_timeout,
            synchronous=synchronous,
            auth_token=auth_token,
        )
        self._registry: dict[str, Job[Any, Any]] = {}
        self._runtime = Runtime(
            settings=settings,
            db=db,
            events=EventBus(),
            registry=self._registry,
            serializer=check_serializer(serializer),
        )
        self._reads: AnyDatabase | ReplicaReader = db
        if replica is not None:
            if not isinstance(db, Database) or not db.remote:
                raise ValidationError(
                    "A replica follows a remote libSQL server; this database is a local file"
                )
            if not isinstance(replica, Replica):
                replica = Replica(replica)
            self._reads = ReplicaReader(replica, db)
        self.worker_id = checked_id
        self._worker: ThreadWorker | AsyncioWorker | None = None
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        """The loop the asyncio engine runs on, while it runs."""
        self._schema_checked = False
        self._lock = threading.Lock()
        self._init_scheduling()

    def __repr__(self) -> str:
        return f"<Durably {display_url(self._runtime.db.url)!r}>"

    @property
    def settings(self) -> config.Settings:
        return self._runtime.settings

    @property
    def replica(self) -> Replica | None:
        """The embedded replica the read API reads (``replica.sync()``, ``replica.metrics()``)."""
        return self._reads.replica if isinstance(self._reads, ReplicaReader) else None

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine durably uses (e.g. to open a connection for transactional enqueue)."""
        return self._runtime.db.engine

    # -- schema -----------------------------------------------------------------

    @blocking
    def migrate(self) -> None:
        """Create or upgrade durably's tables (Alembic ``upgrade head``). Idempotent."""
        migrations.upgrade(self._runtime.db)
        self._schema_checked = True

    async def migrate_async(self) -> None:
        await self._runtime.call(self.migrate)

    # -- worker engines -----------------------------------------------------------

    def start(self, *, queues: Iterable[str] | None = None) -> None:
        """Start the thread worker engine in the background; returns at once.

        For WSGI apps and scripts. In an asyncio app use :meth:`start_async`.
        ``queues`` restricts it to runs of those queues (default: every
        queue of the registered jobs).
        """
        served = check_queues(queues)
        with self._lock:
            if self._claim_engine("thread"):
                return
            self._ensure_schema()
            worker = ThreadWorker(self._runtime, self.worker_id, served)
            worker.start()
            self._worker = worker
            self._scheduler.start()

    async def start_async(self, *, queues: Iterable[str] | None = None) -> None:
        """Start the asyncio worker engine: tasks in the running event loop; returns at once.

        For ASGI apps (call it in the lifespan) and async scripts. ``queues``
        as for :meth:`start`.
        """
        served = check_queues(queues)
        with self._lock:
            if self._claim_engine("asyncio"):
                return
            worker = AsyncioWorker(self._runtime, self.worker_id, served)
            self._worker = worker
        try:
            await self._runtime.call(self._ensure_schema)
            await worker.start()
        except BaseException:
            with self._lock:
                if self._worker is worker:
                    self._worker = None
            raise
        self._set_engine_loop(asyncio.get_running_loop())
        self._scheduler.start()

    def _set_engine_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Record the asyncio engine's loop; blocking calls made on it raise (``blocking``)."""
        old, self._engine_loop = self._engine_loop, loop
        if old is not None:  # an engine that ended without stop_async()
            job_loops.discard(old)
        if loop is not None:
            job_loops.add(loop)

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
            if worker is not None:
                # Only waiting for the thread engine blocks (and, from an async
                # job's loop, waits for that job): the other cases answer at once.
                refuse_blocking(self, "stop")
            self._worker = None
        if worker is not None:
            self._scheduler.stop()
            worker.stop(timeout)

    async def stop_async(self, timeout: float | None = None) -> None:
        """Stop the asyncio engine (same policy as :meth:`stop`)."""
        with self._lock:
            worker = self._worker
            if isinstance(worker, ThreadWorker):
                raise ConflictError("The thread engine is running: use stop()")
            self._worker = None
        if worker is not None:
            try:
                await self._runtime.call(self._scheduler.stop)  # it may wait for a pass
                await worker.stop(timeout)
            finally:
                self._set_engine_loop(None)

    def install_signal_handlers(
        self,
        timeout: float = config.DEFAULT_SIGNAL_STOP_TIMEOUT,
        *,
        signals: Iterable[int] = signal_handlers.STOP_SIGNALS,
    ) -> Callable[[], None]:
        """On SIGTERM or SIGINT, stop the engine gracefully, then let the signal end the process.

        For ``flask run`` and plain scripts, where nothing handles SIGTERM and
        the process would die with its runs still leased. The engine running
        when the signal comes is stopped as by ``stop(timeout)`` (or
        ``stop_async``): in-flight runs get ``timeout`` seconds, the rest are
        handed back, the worker deregisters. Then the handler installed
        before is called, or the process ends as the signal would have ended
        it: ``SystemExit(128 + signum)`` (``KeyboardInterrupt`` for SIGINT),
        so ``finally:`` blocks and ``atexit`` handlers run. A second signal
        during the stop ends the process without waiting any longer.

        Call it from the main thread (:class:`NotMainThreadError` otherwise).
        Returns a function that puts the previous handlers back.
        """
        return signal_handlers.install(self._stop_for_signal, timeout, signals)

    def _stop_for_signal(self, timeout: float, then: Callable[[], None]) -> None:
        """Stop whichever engine runs, then ``then()``; called by a signal handler."""
        loop = self._engine_loop
        if loop is not None:
            signal_handlers.stop_on_loop(loop, self.stop_async(timeout), timeout, then)
            return
        signal_handlers.stop_in_thread(functools.partial(self.stop, timeout), timeout, then)

    @property
    def is_running(self) -> bool:
        return self._worker is not None and self._worker.running

    @property
    def engine_name(self) -> str | None:
        """``"thread"``, ``"asyncio"`` or None: the engine this instance runs now."""
        return self._worker.engine if self.is_running and self._worker is not None else None

    def close(self) -> None:
        """Stop the thread engine and the heartbeat, and close the database connections."""
        self.stop()  # first: while the asyncio engine runs, the documented ConflictError
        refuse_blocking(self, "close")
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

    # -- events -----------------------------------------------------------------

    def on(self, event_type: EventType | str | None, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event of that type; returns an unsubscribe function.

        ``event_type=None`` listens to every event.
        """
        return self._runtime.events.on(event_type, listener)

    def on_error(self, handler: ErrorHandler | None) -> None:
        """Where exceptions raised by event listeners go (default: logged)."""
        self._runtime.events.on_error = handler
