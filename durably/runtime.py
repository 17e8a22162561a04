"""The shared insides of one ``Durably`` instance, handed to every worker engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import ParamSpec

from .bridge import LoopThread, Threads
from .config import Settings
from .database import Database
from .events import EventBus, EventType
from .leases import AbortReason, Lease, LeaseService
from .loop_commit import LoopCommit

T = TypeVar("T")
P = ParamSpec("P")

if TYPE_CHECKING:
    from .jobs import Job


class ActiveLeases:
    """The leases this process holds right now, by run id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_run: dict[str, Lease] = {}

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._by_run[lease.run_id] = lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            if self._by_run.get(lease.run_id) is lease:
                del self._by_run[lease.run_id]

    def get(self, run_id: str) -> Lease | None:
        return self._by_run.get(run_id)

    def snapshot(self) -> list[Lease]:
        with self._lock:
            return list(self._by_run.values())

    def __len__(self) -> int:
        return len(self._by_run)


class Heartbeat:
    """One thread per process that renews every held lease and marks workers alive.

    All leases (and worker rows) are renewed in a single write transaction
    per tick. A failed renewal is reported as ``worker:error``; the lease's
    local deadline still stops the run from starting new steps.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_ids: set[str] = set()

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="durably-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        interval = self._runtime.settings.heartbeat_interval
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> None:
        runtime = self._runtime
        leases = runtime.leases.snapshot()
        worker_ids = sorted(self.worker_ids)
        if not leases and not worker_ids:
            return
        try:
            outcome = runtime.service.heartbeat(worker_ids, leases)
        except Exception as exc:
            runtime.events.emit(
                EventType.WORKER_ERROR, error=str(exc), exception=exc, context="lease-renewal"
            )
            return
        for lease in outcome.renewed:
            runtime.events.emit(
                EventType.RUN_LEASE_RENEWED,
                run_id=lease.run_id,
                job_name=lease.job_name,
                labels=lease.labels,
                lease_owner=lease.owner,
            )
        for lease, reason in outcome.lost:
            lease.abort(reason)
            if reason == AbortReason.LEASE_LOST:
                runtime.events.emit(
                    EventType.WORKER_ERROR,
                    run_id=lease.run_id,
                    job_name=lease.job_name,
                    error=f"Lease renewal lost ownership for run {lease.run_id}",
                    context="lease-renewal",
                )


@dataclass(eq=False)
class Runtime:
    settings: Settings
    db: Database
    service: LeaseService
    events: EventBus
    registry: dict[str, Job[Any, Any]] = field(default_factory=dict)
    leases: ActiveLeases = field(default_factory=ActiveLeases)
    heartbeat: Heartbeat = field(init=False)
    loop_thread: LoopThread = field(default_factory=LoopThread)
    """Where ``async def`` jobs run when sync code (the thread engine) executes them."""
    db_threads: Threads = field(init=False)
    """Where async code runs database operations, so none of them blocks an event loop."""
    loop_commit: LoopCommit = field(init=False)
    """How async code writes a batch: with the batches other tasks of its loop write meanwhile."""
    _wakers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.heartbeat = Heartbeat(self)
        self.db_threads = Threads(self.settings.max_concurrent_runs + 4, "durably-db")
        self.loop_commit = LoopCommit(self.db, self.db_threads)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await a blocking database operation run in :attr:`db_threads`.

        This is how every ``*_async`` method and the asyncio engine reach the
        database: the same operation the sync API runs, off the event loop.
        (An async DBAPI would not help on SQLite: its drivers are blocking C
        code, and libSQL's even holds the GIL while it waits for a lock, so
        the waiting is done by :class:`Database` in Python, in these threads.)
        """
        return await self.db_threads.run(fn, *args, **kwargs)

    def close(self) -> None:
        self.heartbeat.stop()
        self.loop_thread.stop()
        self.db_threads.shutdown(wait=True)
        self.db.dispose()

    def add_waker(self, waker: Callable[[], None]) -> Callable[[], None]:
        """Register a local worker's wake-up call (new work was just committed here)."""
        self._wakers.append(waker)

        def remove() -> None:
            if waker in self._wakers:
                self._wakers.remove(waker)

        return remove

    def wake_workers(self) -> None:
        for waker in list(self._wakers):
            waker()
