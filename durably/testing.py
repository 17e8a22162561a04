"""Helpers for tests: yours of code that uses durably, and durably's own.

Run queued work inline with :meth:`durably.Durably.process_until_idle`. The
helpers here do what a test needs beyond that: act as another worker that
holds a run (:func:`claim`), make time pass for leases (:func:`fake_clock`,
:func:`expire_lease`), look at the leases this process holds
(:func:`held_lease`), run the idle maintenance now (:func:`release_expired`,
:func:`run_maintenance`), and make a scheduler pass now (:func:`tick_schedules`;
:func:`fake_clock` says when "now" is). :func:`lease_service` and :func:`database` give the
lower layers, for tests that drive a worker step by step or the storage layer
itself.

    from durably.testing import claim, expire_lease

    claimed = claim(durably, "a-crashed-worker")
    expire_lease(durably, claimed.lease.run_id)
    durably.process_until_idle()  # resumes the run from its completed steps
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .app import Durably
from .clock import now_ms
from .core import operation
from .core.lease_service import LeaseService
from .core.leases import ClaimedRun, Lease
from .core.maintenance import release_expired as _release_expired
from .core.operation import Operation
from .models import Run
from .schema import runs
from .storage import AnyDatabase
from .storage.async_database import AsyncDatabase

T = TypeVar("T")

__all__ = [
    "ClaimedRun",
    "FakeClock",
    "Lease",
    "async_database",
    "claim",
    "database",
    "expire_lease",
    "fake_clock",
    "held_lease",
    "lease_service",
    "release_expired",
    "renew_leases",
    "run_maintenance",
    "run_operation",
    "run_operation_async",
    "tick_schedules",
]


class FakeClock:
    """Milliseconds since the epoch, moved forward only by :meth:`advance`."""

    def __init__(self, start: int | None = None) -> None:
        self.now = now_ms() if start is None else start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@contextmanager
def fake_clock(durably: Durably, clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Within the block, triggers, delays, leases (claims, renewals, expiry) and maintenance
    read ``clock``: a test can advance it past a delayed run's ``run_at`` or a lease's expiry."""
    clock = FakeClock() if clock is None else clock
    runtime = durably._runtime
    service, maintenance = runtime.service, runtime.maintenance
    saved = runtime.clock, service.clock, maintenance.clock
    runtime.clock = service.clock = maintenance.clock = clock
    try:
        yield clock
    finally:
        runtime.clock, service.clock, maintenance.clock = saved


def claim(durably: Durably, worker_id: str = "test-worker") -> ClaimedRun | None:
    """Lease the next claimable run as worker ``worker_id`` would, without running it.

    Like a worker of ``durably``, it claims only runs of the jobs ``durably``
    has registered.
    """
    return durably._runtime.service.claim(worker_id, durably._runtime.registry)


def expire_lease(durably: Durably, run_id: str) -> None:
    """Make a run's lease expire now, as if its worker had stopped heartbeating."""

    def expire(conn: Any) -> None:
        conn.execute(runs.update().where(runs.c.id == run_id).values(lease_expires_at=now_ms() - 1))

    durably._runtime.db.write(expire)


def held_lease(durably: Durably, run_id: str) -> Lease | None:
    """The lease this process holds on a run while one of its workers executes it."""
    return durably._runtime.leases.get(run_id)


def renew_leases(durably: Durably) -> None:
    """Renew every lease this process holds now, as the heartbeat does every interval."""
    durably._runtime.heartbeat.beat()


def release_expired(durably: Durably) -> int:
    """Turn expired leases back into pending runs now (the reaper); how many."""
    clock = durably._runtime.service.clock
    return durably._runtime.db.write(_release_expired, clock())


def run_maintenance(durably: Durably) -> None:
    """The idle maintenance pass (reaper, worker reaping, retention), now."""
    durably._runtime.maintenance.run(force=True)


def tick_schedules(durably: Durably) -> list[Run]:
    """One scheduler pass now, in this thread, as a worker's scheduler makes it.

    It stores this process's declarations, then enqueues the run of every
    tick due by the runtime's clock (:func:`fake_clock` moves it) under each
    schedule's catch-up policy, and records the ticks as handled. Returns the
    runs of the ticks it chose, oldest first (a tick another process had
    already enqueued comes back as that run, ``Disposition.IDEMPOTENT``).
    No engine needs to run; one that does ticks on its own as well.
    """
    durably._ensure_schema()
    runs, _next_tick = durably._scheduler.tick()
    return runs


def lease_service(durably: Durably) -> LeaseService:
    """The lease holder's operations (claim, steps, heartbeat, completion) of this instance."""
    return durably._runtime.service


def database(durably: Durably) -> AnyDatabase:
    """The storage layer under this instance (:class:`durably.storage.Database`)."""
    return durably._runtime.db


def async_database(durably: Durably) -> AsyncDatabase:
    """The storage layer as coroutines reach it (:class:`durably.storage.async_database.AsyncDatabase`)."""
    return durably._runtime.async_db


def run_operation(durably: Durably, op: Operation[T]) -> T:
    """Run an operation (:mod:`durably.core.operation`) in this thread."""
    return operation.run(op, durably._runtime.db)


async def run_operation_async(durably: Durably, op: Operation[T]) -> T:
    """Run an operation from the event loop."""
    return await operation.run_async(op, durably._runtime.async_db)
