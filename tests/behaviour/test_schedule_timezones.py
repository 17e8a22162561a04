"""Cron schedules in a time zone, across daylight-saving transitions, with a fake clock.

A daily job at a wall-clock time runs once a day, DST days included: on a
spring-forward day that skips its time it runs when the clocks have moved on
(02:30 runs at 03:00); on a fall-back day that repeats its time it runs at the
first occurrence only. Jobs with ``*`` in the hour field run every real hour.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from durably import Durably, StepContext, testing
from durably.clock import to_ms
from durably.testing import FakeClock

UTC = timezone.utc
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def scheduled(durably: Durably) -> Durably:
    @durably.job("nightly")
    def nightly(step: StepContext, input: Any) -> None:
        pass

    return durably


def _on_time_ticks(durably: Durably, clock: FakeClock, until: datetime) -> Iterator[datetime]:
    """Move the clock to each next tick in turn, as a worker that is never late would."""
    while True:
        (schedule,) = durably.get_schedules()
        assert schedule.next_tick is not None
        if schedule.next_tick > until:
            return
        clock.now = to_ms(schedule.next_tick)
        for run in testing.tick_schedules(durably):
            assert run.created_at == run.scheduled_for  # on time
            assert run.scheduled_for is not None
            yield run.scheduled_for


@pytest.mark.parametrize(
    ("zone", "cron", "start", "expected"),
    [
        # Spring forward, Berlin 2025-03-30: 02:00 CET -> 03:00 CEST; 02:30 never happens.
        (BERLIN, "30 2 * * *", "2025-03-29T00:00", ["03-29 01:30", "03-30 01:00", "03-31 00:30"]),
        # Fall back, Berlin 2025-10-26: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        (BERLIN, "30 2 * * *", "2025-10-25T00:00", ["10-25 00:30", "10-26 00:30", "10-27 01:30"]),
        # Spring forward, New York 2025-03-09: 02:00 EST -> 03:00 EDT.
        (NEW_YORK, "30 2 * * *", "2025-03-08T00:00", ["03-08 07:30", "03-09 07:00", "03-10 06:30"]),
        # Fall back, New York 2025-11-02: 02:00 EDT -> 01:00 EST; 01:30 happens twice.
        (NEW_YORK, "30 1 * * *", "2025-11-01T00:00", ["11-01 05:30", "11-02 05:30", "11-03 06:30"]),
    ],
)
def test_a_daily_job_runs_once_on_dst_days(
    scheduled: Durably, zone: str, cron: str, start: str, expected: list[str]
) -> None:
    begin = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(zone))
    with testing.fake_clock(scheduled, FakeClock(to_ms(begin))) as clock:
        scheduled.schedule("nightly", "nightly", cron=cron, timezone=zone)
        ticks = list(_on_time_ticks(scheduled, clock, begin + timedelta(days=3)))
    assert [t.strftime("%m-%d %H:%M") for t in ticks] == expected
    assert len(scheduled.get_runs()) == 3


@pytest.mark.parametrize(
    ("day", "hours"), [("2025-03-30", 23), ("2025-10-26", 25), ("2025-06-01", 24)]
)
def test_an_hourly_job_runs_every_real_hour(scheduled: Durably, day: str, hours: int) -> None:
    tz = ZoneInfo(BERLIN)
    midnight = datetime.fromisoformat(day).replace(tzinfo=tz)
    next_midnight = (midnight + timedelta(days=1, hours=2)).replace(hour=0)  # a wall-clock day
    with testing.fake_clock(scheduled, FakeClock(to_ms(midnight) - 1000)) as clock:
        scheduled.schedule("hourly", "nightly", cron="0 * * * *", timezone=BERLIN)
        ticks = list(_on_time_ticks(scheduled, clock, next_midnight - timedelta(seconds=1)))
    assert len(ticks) == hours
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))


def test_coarse_passes_through_a_repeated_hour_run_the_tick_once(scheduled: Durably) -> None:
    # A worker that checks every 20 minutes, declared in the second 02:xx hour
    # (CET) of the Berlin fall-back day: that day's 02:30 came in the first one.
    declared = utc("2025-10-26T01:10")  # 02:10 CET, after 02:30 CEST
    with testing.fake_clock(scheduled, FakeClock(to_ms(declared))) as clock:
        scheduled.schedule("nightly", "nightly", cron="30 2 * * *", timezone=BERLIN, catch_up="all")
        ticks = []
        for _ in range(3 * 24 * 3 + 3):  # three days and an hour
            clock.advance(20 * 60)
            ticks += [run.scheduled_for for run in testing.tick_schedules(scheduled)]
    assert ticks == [utc("2025-10-27T01:30"), utc("2025-10-28T01:30"), utc("2025-10-29T01:30")]


def test_scheduled_for_is_utc_and_reads_as_local_time_in_the_zone(scheduled: Durably) -> None:
    begin = datetime(2025, 3, 30, 1, 0, tzinfo=ZoneInfo(BERLIN))
    with testing.fake_clock(scheduled, FakeClock(to_ms(begin))) as clock:
        scheduled.schedule("nightly", "nightly", cron="30 2 * * *", timezone=BERLIN)
        (tick,) = _on_time_ticks(scheduled, clock, begin + timedelta(hours=12))
    assert tick.utcoffset() == timedelta(0)
    local = tick.astimezone(ZoneInfo(BERLIN))
    assert (local.hour, local.minute, local.tzname()) == (3, 0, "CEST")
    (run,) = scheduled.get_runs()
    assert run.labels["durably.scheduled_for"] == "2025-03-30T01:00:00+00:00"
