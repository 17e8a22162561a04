"""The scheduler: ticks the schedules a process declared, while one of its engines runs.

Every worker process of an app declares the same schedules
(``durably.schedule``), and each runs a scheduler beside its engine: a
daemon thread of its own, started with the engine, stopped with it. No extra
process is needed, and a process that runs no engine does not tick.

A *pass* (:meth:`Scheduler.tick`) stores this process's declarations if they
changed since it last did, reads the stored schedules, and, for each one it
declared and that is not paused, works out the ticks due since its latest
tick handled (:func:`durably.timetable.chosen_ticks`: the catch-up policy),
enqueues their runs, then moves the latest tick handled forward. Every
process may make the same pass at the same moment: a tick's run carries an
idempotency key made of the schedule's name and the tick's time, so the
unique index on ``(job_name, idempotency_key)`` makes it one run, and the
latest tick handled only moves forward. The runs are enqueued before the
tick is recorded: a process that dies in between leaves the tick to the next
pass, which finds its run already made.

Between passes the thread sleeps until the next tick of any schedule it
ticks (paused ones too, so that a schedule resumed by another process ticks
on time), at most :data:`MAX_SLEEP` seconds; declaring, pausing or resuming
a schedule in this process wakes it. Its database work is operations
(:mod:`durably.core.operation`) run in its own thread, so it never blocks an
event loop, whichever engine runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import serialization
from ..core import operation
from ..core.enqueue import EnqueueRequest
from ..core.operation import Read
from ..core.schedules import Declared, advance_op, declare_op, read_schedules
from ..events import EventType
from ..models import Run
from ..timetable import Timetable, chosen_ticks, tick_key, tick_labels
from ..triggers import DEFAULT_PRIORITY, DEFAULT_QUEUE, build_request
from .claim_loop import error_backoff
from .runtime import Runtime

MAX_SLEEP = 60.0
"""Seconds a scheduler sleeps at most between passes: how soon it sees schedules another
process changed (a new timetable, a new schedule declared there)."""
ERROR_BACKOFF_BASE = 1.0


Enqueue = Callable[[Sequence[EnqueueRequest], int], list[Run]]
"""How the scheduler creates runs: the ``Durably``'s trigger, with the pass's time as theirs."""


class Declarations:
    """The schedules this process declared, by name, and whether the table has them yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Declared] = {}
        self._version = 0
        self._stored = 0

    def declare(self, declared: Declared) -> bool:
        """Add or replace a declaration; False if it was declared so already."""
        with self._lock:
            if self._by_name.get(declared["name"]) == declared:
                return False
            self._by_name[declared["name"]] = declared
            self._version += 1
            return True

    def names(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._by_name)

    def unstored(self) -> tuple[list[Declared], int]:
        """The declarations, if some changed since they were last stored, and their version."""
        with self._lock:
            if self._version == self._stored:
                return [], self._version
            return list(self._by_name.values()), self._version

    def stored(self, version: int) -> None:
        with self._lock:
            self._stored = max(self._stored, version)

    def __bool__(self) -> bool:
        return bool(self._by_name)


class Scheduler:
    """One process's scheduler: its passes, and the thread that makes them (see the module)."""

    def __init__(self, runtime: Runtime, enqueue: Enqueue) -> None:
        self.runtime = runtime
        self._enqueue = enqueue
        self.declarations = Declarations()
        self._lock = threading.Lock()
        self._enabled = False
        """An engine runs in this process: the scheduler ticks (when schedules are declared)."""
        self._thread: threading.Thread | None = None
        """The thread that ticks; a thread that is no longer this one stops."""
        self._wake = threading.Event()
        """Wakes the current thread (each thread has its own: one stopped and one started
        meanwhile never consume each other's wake-up)."""

    # -- the thread -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """An engine started: tick from now on, in a thread of its own, once schedules are declared."""
        with self._lock:
            self._enabled = True
            self._start_thread()

    def declare(self, declared: Declared) -> None:
        """Add or replace a declaration; while an engine runs, it is stored and ticked at once."""
        if self.declarations.declare(declared):
            with self._lock:
                self._start_thread()
            self.wake()

    def _start_thread(self) -> None:
        """Under the lock: start the thread if an engine runs, schedules are declared, none runs."""
        if not self._enabled or self.running or not self.declarations:
            return
        self._wake = wake = threading.Event()
        self._thread = thread = threading.Thread(
            target=self._loop, args=(wake,), name="durably-scheduler", daemon=True
        )
        thread.start()

    def stop(self) -> None:
        """The engine stopped: stop ticking; waits for a pass in progress to end."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._enabled = False
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def wake(self) -> None:
        """Make a pass now (the declarations, or a schedule's state, changed here)."""
        self._wake.set()

    def _loop(self, wake: threading.Event) -> None:
        failures = 0
        while self._thread is threading.current_thread():
            try:
                _runs, next_tick = self.tick()
            except Exception as exc:
                failures += 1
                self._report(exc)
                wait = error_backoff(failures, ERROR_BACKOFF_BASE)
            else:
                failures = 0
                wait = self._until(next_tick)
            wake.wait(wait)
            wake.clear()

    def _until(self, tick: int | None) -> float:
        """Seconds to sleep until ``tick`` (ms on the runtime's clock), at most MAX_SLEEP."""
        if tick is None:
            return MAX_SLEEP
        # A millisecond past the tick: a timer that fires a hair early finds it not due yet.
        return min(MAX_SLEEP, max(0.0, (tick - self.runtime.clock() + 1) / 1000))

    # -- a pass ---------------------------------------------------------------------------

    def store_declarations(self, now: int) -> None:
        """Write this process's declarations to the table, if they changed since it last did."""
        declared, version = self.declarations.unstored()
        if declared:
            operation.run(declare_op(declared, now), self.runtime.db)
            self.declarations.stored(version)

    def tick(self) -> tuple[list[Run], int | None]:
        """One pass, now: the runs it enqueued (oldest tick first), and when the next tick comes."""
        runtime = self.runtime
        now = runtime.clock()
        self.store_declarations(now)
        mine = self.declarations.names()
        rows = operation.run(_read_all(), runtime.db)
        requests: list[EnqueueRequest] = []
        handled: dict[str, int] = {}
        next_tick: int | None = None
        for row in rows:
            if row["name"] not in mine:
                continue  # declared by other processes only: theirs to tick
            try:
                timetable = Timetable(row["cron"], row["every_ms"], row["timezone"])
                if not row["paused"]:
                    ticks, latest = chosen_ticks(
                        timetable, row["catch_up"], row["last_tick_at"], now
                    )
                    requests.extend(self.request(row, tick) for tick in ticks)
                    if latest > row["last_tick_at"]:
                        handled[row["name"]] = latest
                upcoming = timetable.next_after(now)
            except Exception as exc:  # one schedule that cannot tick here stops no other
                self._report(exc, row["name"])
                continue
            next_tick = upcoming if next_tick is None else min(next_tick, upcoming)
        runs = self._enqueue(requests, now) if requests else []
        operation.run(advance_op(handled), runtime.db)
        return runs, next_tick

    def request(self, row: Mapping[Any, Any], tick: int, *, keyed: bool = True) -> EnqueueRequest:
        """The trigger of a schedule's run for ``tick``: its labels say which schedule and tick,
        and (``keyed``) its idempotency key makes it one run in every process."""
        job = self.runtime.registry.get(row["job_name"])
        return build_request(
            row["job_name"],
            serialization.load(self.runtime.serializer, row["input"]),
            idempotency_key=tick_key(row["name"], tick) if keyed else None,
            labels=tick_labels(row["name"], tick, serialization.loads(row["labels"])),
            queue=DEFAULT_QUEUE if job is None else job.queue,
            priority=DEFAULT_PRIORITY if job is None else job.priority,
            serializer=self.runtime.serializer,
        )

    def _report(self, exc: Exception, name: str | None = None) -> None:
        """A failed pass, or a schedule that cannot tick here: ``worker:error``, context "schedule"."""
        self.runtime.events.emit(
            EventType.WORKER_ERROR,
            run_id=None,
            error=str(exc) if name is None else f"schedule {name!r}: {exc}",
            exception=exc,
            context="schedule",
        )


def _read_all() -> operation.Operation[list[Any]]:
    rows: list[Any] = yield Read(read_schedules)
    return rows
