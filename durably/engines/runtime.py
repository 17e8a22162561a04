"""The shared insides of one ``Durably`` instance, handed to every worker engine."""

from __future__ import annotations

import functools
import heapq
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from typing_extensions import ParamSpec

from ..bridge import LoopThread, Threads
from ..clock import now_ms
from ..config import Settings
from ..core.lease_service import LeaseService
from ..core.leases import Lease
from ..events import EventBus
from ..flow import DeclaredQueues
from ..instrumentation import Instrumentation
from ..retry import Retry
from ..serialization import DEFAULT_SERIALIZER, Serializer
from ..storage import AnyDatabase, PostgresDatabase
from ..storage.async_database import AsyncDatabase
from ..storage.postgresql_notify import Notifications
from .heartbeat import Heartbeat
from .maintenance import Maintenance

T = TypeVar("T")
P = ParamSpec("P")


class RegisteredJob(Protocol):
    """What an engine needs of a job: its function, whether it is ``async def``, its limits,
    and where the runs a scheduler makes for it go (its queue and priority)."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def is_async(self) -> bool: ...

    @property
    def max_recoveries(self) -> int | None: ...

    @property
    def retry(self) -> Retry | None: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def queue(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def input_model(self) -> type | None: ...

    @property
    def output_model(self) -> type | None: ...


class DueTimes:
    """When delayed runs this process knows of become claimable (its triggers, its retries).

    An idle worker waits until the earliest of them instead of a whole
    polling interval, so a run delayed by 0.2 s starts 0.2 s later, not at
    the next poll. Runs other processes delay are found by polling.
    """

    _LIMIT = 10_000
    """Times kept at most: past that, later ones are left to polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: list[int] = []

    def add(self, run_at: int) -> None:
        with self._lock:
            if len(self._times) < self._LIMIT:
                heapq.heappush(self._times, run_at)

    def wait(self, longest: float, now: int) -> float:
        """Seconds from ``now`` until the earliest time still to come, at most ``longest``."""
        with self._lock:
            times = self._times
            while times and times[0] <= now:
                heapq.heappop(times)
            if not times:
                return longest
            return min(longest, (times[0] - now) / 1000)


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


@dataclass(eq=False)
class Runtime:
    settings: Settings
    db: AnyDatabase
    events: EventBus
    registry: Mapping[str, RegisteredJob]
    """The jobs this process can run, by name (the ``Durably``'s own registry)."""
    service: LeaseService = field(init=False)
    maintenance: Maintenance = field(init=False)
    leases: ActiveLeases = field(default_factory=ActiveLeases)
    heartbeat: Heartbeat = field(init=False)
    loop_thread: LoopThread = field(default_factory=lambda: LoopThread(runs_jobs=True))
    """Where ``async def`` jobs run when sync code (the thread engine) executes them."""
    db_threads: Threads = field(init=False)
    """Where async code runs blocking database work, so none of it blocks an event loop."""
    async_db: AsyncDatabase = field(init=False)
    """The database as coroutines reach it: the async driver's storage."""
    due_times: DueTimes = field(default_factory=DueTimes)
    clock: Callable[[], int] = now_ms
    """Milliseconds since the epoch: when runs are created and due (``durably.testing``
    fakes it, with the lease service's and the maintenance's)."""
    queues: DeclaredQueues = field(default_factory=DeclaredQueues)
    """The queue limits this instance declared; every claim it makes keeps them."""
    serializer: Serializer = DEFAULT_SERIALIZER
    """How your values are stored (``Durably(serializer=...)``, :mod:`durably.serialization`)."""
    instrumentation: Instrumentation | None = None
    """What traces this instance's triggers, run attempts and steps (None: nothing does)."""
    _wakers: list[Callable[[], None]] = field(default_factory=list)
    _notifications: Notifications | None = field(init=False)
    """On PostgreSQL: wakes the workers of other processes, and is woken by them."""

    def __post_init__(self) -> None:
        self.service = LeaseService(
            self.db, self.settings, queues=self.queues, dialect=self.db.engine.dialect.name
        )
        self.maintenance = Maintenance(self.db, self.settings, self.queues)
        self.heartbeat = Heartbeat(self.service, self.leases.snapshot, self.events)
        self.db_threads = Threads(self.settings.max_concurrent_runs + 4, "durably-db")
        self.async_db = AsyncDatabase(self.db, self.db_threads)
        self._notifications = (
            Notifications(self.db, self._wake_local)
            if isinstance(self.db, PostgresDatabase)
            else None
        )

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await a blocking call (an API method, a migration) run in a database thread.

        In a copy of the caller's context, as ``asyncio.to_thread`` does: a
        call sees the caller's context variables (its current span, for one).
        """
        call: Callable[[], T] = functools.partial(copy_context().run, fn, *args, **kwargs)
        return await self.db_threads.run(call)

    @contextmanager
    def holding(self, lease: Lease) -> Iterator[None]:
        """While a run executes: its lease is renewed by the heartbeat, and can be looked up."""
        self.leases.add(lease)
        self.heartbeat.ensure_running()
        try:
            yield
        finally:
            self.leases.remove(lease)

    def close(self) -> None:
        self.heartbeat.stop()
        if self._notifications is not None:
            self._notifications.close()
        self.loop_thread.stop()
        self.db_threads.shutdown(wait=True)
        self.db.dispose()

    def add_waker(self, waker: Callable[[], None]) -> Callable[[], None]:
        """Register a local worker's wake-up call (new work was just committed, here or, on
        PostgreSQL, in another process)."""
        self._wakers.append(waker)
        if self._notifications is not None:
            self._notifications.listen()

        def remove() -> None:
            if waker in self._wakers:
                self._wakers.remove(waker)
            if not self._wakers and self._notifications is not None:
                self._notifications.stop_listening()

        return remove

    def wake_workers(self) -> None:
        """New work was committed: wake this process's workers, and on PostgreSQL the others'."""
        self._wake_local()
        if self._notifications is not None:
            self._notifications.announce()

    def _wake_local(self) -> None:
        for waker in list(self._wakers):
            waker()
