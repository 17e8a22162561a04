"""Schedules: declaring, ticking (one run per tick), catch-up, pause, resume, trigger, validation.

Ticks are driven with a fake clock (``durably.testing.fake_clock``) and one
scheduler pass at a time (``durably.testing.tick_schedules``), except where a
worker engine ticks on its own.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from durably import (
    ConflictError,
    Disposition,
    Durably,
    Job,
    NotFoundError,
    RunStatus,
    StepContext,
    ValidationError,
    testing,
)
from durably.testing import FakeClock

WAIT = 30.0
MINUTE = 60_000
T0 = 1_767_225_600_000
"""2026-01-01T00:00:00Z: a whole minute (and hour), so every tick of every=60 is T0 + n minutes."""


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _echo(durably: Durably, seen: list[Any] | None = None) -> Job[Any, Any]:
    @durably.job("echo")
    def echo(step: StepContext, input: Any) -> Any:
        if seen is not None:
            seen.append(input)
        return input

    return echo


def _ticked(durably: Durably, clock: FakeClock, seconds: float) -> list[Any]:
    """Move the clock on and make one pass: the ticks of the runs it made."""
    clock.advance(seconds)
    return [run.scheduled_for for run in testing.tick_schedules(durably)]


def test_a_tick_makes_one_run_that_says_which_schedule_and_tick(durably: Durably) -> None:
    seen: list[Any] = []
    echo = _echo(durably, seen)
    with testing.fake_clock(durably, FakeClock(T0 + 10_000)) as clock:
        durably.schedule("reports", echo, every=60, input={"kind": "daily"}, labels={"team": "a"})
        assert testing.tick_schedules(durably) == []  # a new schedule makes no run for the past

        clock.advance(50)  # T0 + 1 minute
        (run,) = testing.tick_schedules(durably)
        assert run.disposition is Disposition.CREATED
        assert run.schedule == "reports"
        assert run.scheduled_for == at(T0 + MINUTE)
        assert run.labels == {
            "team": "a",
            "durably.schedule": "reports",
            "durably.scheduled_for": "2026-01-01T00:01:00+00:00",
        }
        assert run.input == {"kind": "daily"}
        assert run.created_at == at(T0 + MINUTE)
        assert testing.tick_schedules(durably) == []  # the same tick again: nothing more
        assert durably.process_until_idle() == 1
    assert seen == [{"kind": "daily"}]
    assert durably.get_runs(labels={"durably.schedule": "reports"})[0].status == "completed"


def test_a_run_not_made_by_a_schedule_has_no_schedule(durably: Durably) -> None:
    run = _echo(durably).trigger(1)
    assert (run.schedule, run.scheduled_for) == (None, None)


def test_two_processes_ticking_the_same_tick_make_one_run(make_durably: Callable[..., Any]) -> None:
    first, second = make_durably(), make_durably()
    clock = FakeClock(T0 + 1_000)
    for instance in (first, second):
        instance.schedule("every-minute", _echo(instance), every=timedelta(minutes=1))
    with testing.fake_clock(first, clock), testing.fake_clock(second, clock):
        testing.tick_schedules(first)
        testing.tick_schedules(second)
        clock.advance(59)
        (made,) = testing.tick_schedules(first)
        (again,) = _tick_from_a_stale_read(second)
    assert made.disposition is Disposition.CREATED
    assert again.id == made.id
    assert again.disposition is Disposition.IDEMPOTENT
    assert len(first.get_runs()) == 1


def _tick_from_a_stale_read(durably: Durably) -> list[Any]:
    """A pass that read the schedule before the other process recorded its tick: the race
    two processes run when they wake for the same tick."""
    (schedule,) = durably.get_schedules()
    with testing.database(durably).engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE durably_schedules SET last_tick_at = :at WHERE name = :name"),
            {"at": T0, "name": schedule.name},
        )
    return testing.tick_schedules(durably)


@pytest.mark.parametrize(
    ("catch_up", "missed_runs"),
    [("latest", [10]), ("all", list(range(1, 11))), ("none", [])],
)
def test_ticks_missed_while_no_worker_ran_follow_the_catch_up_policy(
    durably: Durably, catch_up: str, missed_runs: list[int]
) -> None:
    echo = _echo(durably)
    with testing.fake_clock(durably, FakeClock(T0)) as clock:
        durably.schedule("s", echo, every=60, catch_up=catch_up)
        testing.tick_schedules(durably)
        # Every worker down for ten and a half minutes: ticks 1..10 were missed.
        assert _ticked(durably, clock, 10 * 60 + 30) == [at(T0 + n * MINUTE) for n in missed_runs]
        # Back to normal: the next tick runs on time whatever the policy.
        assert _ticked(durably, clock, 30) == [at(T0 + 11 * MINUTE)]
        assert _ticked(durably, clock, 60) == [at(T0 + 12 * MINUTE)]
    assert len(durably.get_runs()) == len(missed_runs) + 2


def test_catching_up_all_runs_the_100_most_recent_missed_ticks_oldest_first(
    durably: Durably,
) -> None:
    with testing.fake_clock(durably, FakeClock(T0)) as clock:
        durably.schedule("s", _echo(durably), every=1, catch_up="all")
        testing.tick_schedules(durably)
        ticks = _ticked(durably, clock, 500.2)
    assert ticks == [at(T0 + n * 1000) for n in range(401, 501)]
    runs = durably.get_runs(limit=None)
    assert sorted(run.scheduled_for for run in runs) == ticks  # type: ignore[type-var]
    # Claimed oldest tick first.
    assert [r.scheduled_for for r in sorted(runs, key=lambda r: r.id)] == ticks


@pytest.mark.parametrize(
    ("every", "late", "runs"),
    [
        (60, 4.9, True),  # up to 5 s late: the delay of a worker that woke late, not a miss
        (60, 5.1, False),
        (1, 0.5, True),  # at most half an interval late: one tick is on time at most
        (1, 0.6, False),
    ],
)
def test_catch_up_none_still_runs_a_tick_found_a_little_late(
    durably: Durably, every: int, late: float, runs: bool
) -> None:
    with testing.fake_clock(durably, FakeClock(T0)) as clock:
        durably.schedule("s", _echo(durably), every=every, catch_up="none")
        testing.tick_schedules(durably)
        ticks = _ticked(durably, clock, every + late)
    assert ticks == ([at(T0 + every * 1000)] if runs else [])


def test_declaring_again_is_a_no_op_or_an_update(durably: Durably) -> None:
    echo = _echo(durably)
    with testing.fake_clock(durably, FakeClock(T0 + 1_000)) as clock:
        durably.schedule("s", echo, every=60, input=1)
        (declared,) = durably.get_schedules()
        assert (declared.every, declared.cron, declared.input) == (timedelta(minutes=1), None, 1)
        assert (declared.catch_up, declared.paused, declared.labels) == ("latest", False, {})
        assert declared.last_tick == declared.created_at == at(T0 + 1_000)
        assert declared.next_tick == at(T0 + MINUTE)

        clock.advance(120)
        durably.schedule("s", "echo", every=60.0, input=1)  # the same, said differently
        assert durably.get_schedules() == [replace(declared, next_tick=at(T0 + 3 * MINUTE))]

        durably.schedule("s", echo, every=60, input=2)  # new input: same ticks
        (updated,) = durably.get_schedules()
        assert (updated.input, updated.updated_at, updated.last_tick) == (
            2,
            at(T0 + 121_000),
            declared.last_tick,
        )
        durably.schedule("s", echo, every=30, input=2)  # new timetable: from now
        (retimed,) = durably.get_schedules()
        assert (retimed.every, retimed.last_tick) == (timedelta(seconds=30), at(T0 + 121_000))
        assert testing.tick_schedules(durably) == []


def test_a_paused_schedule_makes_no_runs_and_resumes_from_now(durably: Durably) -> None:
    with testing.fake_clock(durably, FakeClock(T0)) as clock:
        durably.schedule("s", _echo(durably), every=60, catch_up="all")
        paused = durably.pause_schedule("s")
        assert (paused.paused, paused.next_tick) == (True, None)
        assert _ticked(durably, clock, 300) == []

        resumed = durably.resume_schedule("s")
        assert (resumed.paused, resumed.last_tick) == (False, at(T0 + 5 * MINUTE))
        assert resumed.next_tick == at(T0 + 6 * MINUTE)
        assert _ticked(durably, clock, 0) == []  # the paused ticks are not caught up
        assert _ticked(durably, clock, 60) == [at(T0 + 6 * MINUTE)]
        assert durably.resume_schedule("s").last_tick == at(T0 + 6 * MINUTE)  # not paused


def test_trigger_schedule_runs_the_job_now_outside_the_timetable(durably: Durably) -> None:
    with testing.fake_clock(durably, FakeClock(T0 + 7_000)) as clock:
        durably.schedule("s", _echo(durably), every=60, input="x", labels={"k": "v"})
        durably.pause_schedule("s")
        first = durably.trigger_schedule("s")
        second = durably.trigger_schedule("s")
        assert first.id != second.id
        assert (first.input, first.schedule, first.scheduled_for) == ("x", "s", at(T0 + 7_000))
        assert first.labels["k"] == "v"
        assert first.idempotency_key is None
        (schedule,) = durably.get_schedules()
        assert schedule.last_tick == at(T0 + 7_000)
        durably.resume_schedule("s")
        assert _ticked(durably, clock, 53) == [at(T0 + MINUTE)]


def test_a_schedule_removed_from_the_code_is_deleted_and_its_runs_stay(
    make_durably: Callable[..., Any],
) -> None:
    old = make_durably()  # the deploy that declared it
    old.schedule("nightly", _echo(old), every=3600, input="x")
    made = old.trigger_schedule("nightly")
    with pytest.raises(ConflictError, match="declared in this process"):
        old.delete_schedule("nightly")

    new = make_durably()  # the deploy that no longer does
    new.delete_schedule("nightly")
    assert new.get_schedules() == []
    assert new.get_run(made.id) is not None
    with pytest.raises(NotFoundError, match="nightly"):
        new.delete_schedule("nightly")


def test_unknown_schedules_are_not_found(durably: Durably) -> None:
    changes = (durably.pause_schedule, durably.resume_schedule, durably.trigger_schedule)
    for change in (*changes, durably.delete_schedule):
        with pytest.raises(NotFoundError, match="nope"):
            change("nope")


def test_the_async_twins(durably: Durably) -> None:
    durably.schedule("s", _echo(durably), every=3600)

    async def calls() -> tuple[Any, ...]:
        return (
            await durably.get_schedules_async(),
            await durably.pause_schedule_async("s"),
            await durably.resume_schedule_async("s"),
            await durably.trigger_schedule_async("s"),
        )

    listed, paused, resumed, run = asyncio.run(calls())
    assert [s.name for s in listed] == ["s"]
    assert (paused.paused, resumed.paused, run.schedule) == (True, False, "s")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "exactly one of cron= or every="),
        ({"every": 60, "cron": "* * * * *"}, "exactly one"),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": timedelta(milliseconds=999)}, "at least 1 second"),
        ({"every": "60"}, "every"),
        ({"every": float("inf")}, "every"),
        ({"cron": "0 0 * * * *"}, "5 fields"),
        ({"cron": "61 * * * *"}, "Invalid cron"),
        ({"cron": "0 0 30 2 *"}, "Invalid cron"),
        ({"cron": 5}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"every": 60, "timezone": "Europe/Berlin"}, "cron= schedules only"),
        ({"every": 60, "catch_up": "some"}, "catch_up"),
        ({"every": 60, "labels": {"durably.schedule": "x"}}, "set by durably"),
        ({"every": 60, "labels": {"bad key": "x"}}, "label key"),
        ({"every": 60, "input": object()}, "input"),
        ({"every": 60, "name": ""}, "schedule name"),
        ({"every": 60, "name": "x" * 201}, "schedule name"),
        ({"every": 60, "job": "unregistered"}, "registered"),
    ],
)
def test_bad_declarations_are_refused_and_nothing_is_stored(
    durably: Durably, arguments: dict[str, Any], message: str
) -> None:
    arguments = {"name": "s", "job": _echo(durably), **arguments}
    with pytest.raises(ValidationError, match=message):
        durably.schedule(arguments.pop("name"), arguments.pop("job"), **arguments)
    assert durably.get_schedules() == []


def test_a_job_of_another_durably_is_refused(make_durably: Callable[..., Any]) -> None:
    here, there = make_durably(), make_durably()
    _echo(here)
    with pytest.raises(ValidationError, match="another Durably"):
        here.schedule("s", _echo(there), every=60)


def test_cron_needs_cronsim_and_every_does_not(
    durably: Durably, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # as if it were not installed
    with pytest.raises(ValidationError, match=r"pip install 'durably\[cron\]'"):
        durably.schedule("c", _echo(durably), cron="0 9 * * *")
    durably.schedule("e", "echo", every=60)
    assert [s.name for s in durably.get_schedules()] == ["e"]


@pytest.mark.both_engines
def test_a_worker_ticks_its_schedules_and_only_while_it_runs(durably: Durably) -> None:
    echo = _echo(durably)
    durably.schedule("fast", echo, every=1, catch_up="none")
    time.sleep(1.1)  # a tick came: with no engine running, nobody made its run
    assert durably.get_runs() == []

    durably.start()
    deadline = time.monotonic() + WAIT
    while len(_done(durably)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    durably.stop()
    runs = durably.get_runs(labels={"durably.schedule": "fast"})
    assert len(_done(durably)) >= 2
    ticks = [run.scheduled_for for run in runs]
    assert len(set(ticks)) == len(ticks)
    time.sleep(1.1)  # a tick came: the engine stopped, and its scheduler with it
    assert len(durably.get_runs()) == len(runs)


@pytest.mark.both_engines
def test_a_schedule_declared_while_the_engine_runs_ticks_at_once(durably: Durably) -> None:
    durably.start()
    durably.schedule("late", _echo(durably), every=1)
    deadline = time.monotonic() + WAIT
    while not _done(durably) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _done(durably)
    durably.stop()


def test_a_schedule_that_cannot_tick_here_is_reported_and_stops_no_other(
    durably: Durably, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Any] = []
    durably.on("worker:error", errors.append)
    with testing.fake_clock(durably, FakeClock(T0)) as clock:
        durably.schedule("cron", _echo(durably), cron="* * * * *")
        durably.schedule("every", "echo", every=60)
        testing.tick_schedules(durably)
        monkeypatch.setitem(sys.modules, "cronsim", None)  # gone since it was declared
        assert _ticked(durably, clock, 60) == [at(T0 + MINUTE)]
    (error,) = errors
    assert error.context == "schedule"
    assert "'cron'" in error.error
    assert "durably[cron]" in error.error
    assert [run.schedule for run in durably.get_runs()] == ["every"]


def _done(durably: Durably) -> list[Any]:
    return durably.get_runs(status=RunStatus.COMPLETED)
