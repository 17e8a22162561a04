"""Schedules: declaring them, reading them, pausing, resuming and triggering them.

A schedule is declared in code, the same way in every process of an app
(``durably.schedule(...)``), and stored in ``durably_schedules`` when this
process's scheduler first makes a pass, or when this process first reads or
changes schedules. Ticking is the workers' job
(:mod:`durably.engines.scheduler`): a process that runs no engine declares
and reads schedules but makes no runs of its own accord.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from .. import serialization
from ..bridge import blocking
from ..core import operation
from ..core import schedules as schedule_store
from ..core.enqueue import EnqueueRequest, enqueue_op
from ..engines.scheduler import Scheduler
from ..errors import ConflictError, NotFoundError, ValidationError
from ..jobs import Job
from ..models import Run, Schedule
from ..serialization import Serializer
from ..timetable import (
    RESERVED_LABELS,
    Timetable,
    check_catch_up,
    check_name,
    check_timetable,
)
from ..triggers import validate_labels
from .triggering import Triggering, _returned


class Scheduling(Triggering):
    _scheduler: Scheduler

    def _init_scheduling(self) -> None:
        self._scheduler = Scheduler(self._runtime, self._enqueue_scheduled)

    def schedule(
        self,
        name: str,
        job: Job[Any, Any] | str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        input: Any = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Declare a schedule: run ``job`` with ``input`` at every tick of a timetable.

        Exactly one of ``cron`` (a 5-field expression, read in ``timezone``;
        needs ``durably[cron]``) or ``every`` (seconds or a ``timedelta``, at
        least 1 s, counted from the Unix epoch). ``job`` is a registered
        ``Job`` or its name. ``catch_up`` says what happens to ticks missed
        while every worker was down: ``"latest"`` runs the most recent,
        ``"all"`` each (at most 100), ``"none"`` none. ``labels`` go on every
        run, with ``durably.schedule`` and ``durably.scheduled_for``.

        Every process declares the same schedules; the workers tick them, and
        each tick makes one run across all processes. Declaring it again with
        the same arguments changes nothing; with others, it updates the stored
        schedule. A new schedule (or a new timetable) starts from its
        declaration: no run for ticks before it.
        """
        declared = self._declaration(name, job, cron, every, input, timezone, catch_up, labels)
        self._scheduler.declare(declared)

    def _declaration(
        self,
        name: object,
        job: Any,
        cron: object,
        every: object,
        input: Any,
        timezone: object,
        catch_up: object,
        labels: Mapping[str, str] | None,
    ) -> schedule_store.Declared:
        """A declaration checked completely, before anything is stored."""
        checked_name = check_name(name)
        job_name = self._scheduled_job(job)
        timetable = check_timetable(cron, every, timezone)
        checked_labels = validate_labels(labels)
        reserved = sorted(set(checked_labels) & set(RESERVED_LABELS))
        if reserved:
            raise ValidationError(f"Labels {reserved} are set by durably on every scheduled run")
        return {
            "name": checked_name,
            "job_name": job_name,
            "cron": timetable.cron,
            "every_ms": timetable.every_ms,
            "timezone": timetable.timezone,
            "input": serialization.store(
                self._runtime.serializer, input, what="The schedule's input"
            ),
            "labels": serialization.dumps(dict(sorted(checked_labels.items())), what="labels"),
            "catch_up": check_catch_up(catch_up),
        }

    def _scheduled_job(self, job: Any) -> str:
        """The name of the job a schedule runs: a ``Job`` registered here, or a registered name."""
        name = job if isinstance(job, str) else getattr(job, "name", None)
        if not isinstance(name, str) or self._registry.get(name) is None:
            raise ValidationError(
                f"A schedule runs a job registered on this Durably (a Job or its name), got {job!r}"
            )
        if not isinstance(job, str) and self._registry[name] is not job:
            raise ValidationError(f"Job {name!r} is registered on another Durably")
        return name

    # -- reading and changing stored schedules --------------------------------------------

    @blocking
    def get_schedules(self) -> list[Schedule]:
        """Every stored schedule, by name (this process's declarations stored first)."""
        now = self._store_declarations()
        rows = self._runtime.db.read(schedule_store.read_schedules)
        return [_schedule(row, now, self._runtime.serializer) for row in rows]

    @blocking
    def pause_schedule(self, name: str) -> Schedule:
        """Stop a schedule's ticks making runs, in every process, until it is resumed."""
        return self._set_paused(name, True)

    @blocking
    def resume_schedule(self, name: str) -> Schedule:
        """Let a paused schedule tick again, from now: the ticks it missed while paused are not run."""
        return self._set_paused(name, False)

    @blocking
    def trigger_schedule(self, name: str) -> Run:
        """Run a schedule's job once now, with its input and labels, paused or not.

        The run is outside the timetable: it moves no tick. Its
        ``scheduled_for`` is the moment of the trigger.
        """
        now = self._store_declarations()
        row = self._runtime.db.read(schedule_store.read_schedule, name)
        if row is None:
            raise NotFoundError(f"Schedule not found: {name}")
        return self._enqueue_scheduled([self._scheduler.request(row, now, keyed=False)], now)[0]

    @blocking
    def delete_schedule(self, name: str) -> None:
        """Delete a stored schedule you removed from your code; the runs it made stay.

        Refused (``ConflictError``) while this process declares it: it would be
        stored again. A process of an older deploy that still declares it
        stores it again when it starts.
        """
        if name in self._scheduler.declarations.names():
            raise ConflictError(
                f"Schedule {name!r} is declared in this process: remove its durably.schedule() first"
            )
        self._ensure_schema()
        if not operation.run(schedule_store.delete_op(name), self._runtime.db):
            raise NotFoundError(f"Schedule not found: {name}")

    def _set_paused(self, name: str, paused: bool) -> Schedule:
        now = self._store_declarations()
        row = operation.run(schedule_store.pause_op(name, paused, now), self._runtime.db)
        if row is None:
            raise NotFoundError(f"Schedule not found: {name}")
        self._scheduler.wake()
        return _schedule(row, now, self._runtime.serializer)

    def _store_declarations(self) -> int:
        """Store this process's declarations if they changed; the time now (runtime's clock)."""
        self._ensure_schema()
        now = self._runtime.clock()
        self._scheduler.store_declarations(now)
        return now

    def _enqueue_scheduled(self, requests: Sequence[EnqueueRequest], now: int) -> list[Run]:
        """Create scheduled runs at ``now``, the scheduler's pass time, announced as triggers."""
        self._ensure_schema()
        enqueued = operation.run(enqueue_op(requests, now), self._runtime.db)
        runs = _returned(enqueued, now, self._runtime.serializer)
        self._announce(requests, runs, now)
        return runs

    # -- async twins: the same calls, run in a database thread

    async def get_schedules_async(self) -> list[Schedule]:
        return await self._runtime.call(self.get_schedules)

    async def pause_schedule_async(self, name: str) -> Schedule:
        return await self._runtime.call(self.pause_schedule, name)

    async def resume_schedule_async(self, name: str) -> Schedule:
        return await self._runtime.call(self.resume_schedule, name)

    async def delete_schedule_async(self, name: str) -> None:
        await self._runtime.call(self.delete_schedule, name)

    async def trigger_schedule_async(self, name: str) -> Run:
        return await self._runtime.call(self.trigger_schedule, name)


def _schedule(row: Mapping[Any, Any], now: int, serializer: Serializer) -> Schedule:
    """The public view of a stored schedule, with its next tick from ``now``."""
    next_tick: int | None = None
    if not row["paused"]:
        timetable = Timetable(row["cron"], row["every_ms"], row["timezone"])
        try:
            next_tick = timetable.next_after(max(now, row["last_tick_at"]))
        except ValidationError:  # a cron schedule, and cronsim is not installed here
            next_tick = None
    return Schedule.from_row(row, next_tick, serializer=serializer)
