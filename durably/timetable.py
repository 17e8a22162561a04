"""When a schedule ticks: the vocabulary of schedules, checked before anything is stored.

A schedule's *timetable* is a 5-field cron expression in a time zone, or a
fixed interval. Every process of an app computes a schedule's ticks from the
stored timetable alone, so they all agree on the instants (integer
milliseconds since the epoch, UTC): a tick's run then gets an idempotency key
made of the schedule's name and that instant (:func:`tick_key`), and two
processes enqueueing the same tick make one run.

* ``every=`` ticks are the multiples of the interval since the Unix epoch
  (``every=3600``: on the hour, UTC). No time zone applies to them.
* ``cron=`` ticks are computed by ``cronsim`` (the ``durably[cron]`` extra)
  in the schedule's time zone, as Debian's cron runs them: a job at a time a
  spring-forward day skips runs once, when the clocks have moved on (02:30
  runs at 03:00), and a job at a time a fall-back day repeats runs once, at
  its first occurrence. Expressions with ``*`` in the minute or hour field
  tick on every real minute or hour. See docs/contributing for why cronsim.

Catch-up: a tick is *on time* if it is found at most :meth:`Timetable.grace_ms`
after it came (the checking delay of a worker that was busy or woke late);
an older one was *missed* (every worker was down). On-time ticks always run;
``catch_up`` says what happens to missed ones (:func:`chosen_ticks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .clock import to_datetime
from .errors import ValidationError

CatchUp = Literal["latest", "all", "none"]
"""What a schedule does with the ticks it missed while every worker was down:

``"latest"`` runs the most recent of them, ``"all"`` runs each (oldest
first, the :data:`MAX_CATCH_UP` most recent at most), ``"none"`` runs none."""
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)

MAX_CATCH_UP = 100
"""Missed ticks ``catch_up="all"`` runs at most after one outage: the most recent ones."""
MAX_GRACE_MS = 5_000
"""How late a tick may be found and still be on time, at most (see :meth:`Timetable.grace_ms`)."""
MS_PER_SECOND = 1_000
MIN_EVERY_MS = MS_PER_SECOND
"""The shortest interval: one second."""
MAX_NAME_LENGTH = 200
"""A schedule name's length at most: its tick's idempotency key must fit 255 characters."""

SCHEDULE_LABEL = "durably.schedule"
"""The label that names the schedule a run was made by (``Run.schedule``)."""
SCHEDULED_FOR_LABEL = "durably.scheduled_for"
"""The label that holds the tick a run was made for, ISO-8601 in UTC (``Run.scheduled_for``)."""
RESERVED_LABELS = (SCHEDULE_LABEL, SCHEDULED_FOR_LABEL)

_UTC_NAMES = ("UTC", "Etc/UTC")
_CRON_FIELDS = 5
_FIRST_LOOKBACK_MS = 3_600_000
"""How far back a cron timetable first looks for the ticks it needs (widened 4x at a time)."""


@dataclass(frozen=True)
class Timetable:
    """A schedule's ticks: ``cron`` in ``timezone``, or every ``every_ms`` milliseconds."""

    cron: str | None
    every_ms: int | None
    timezone: str = "UTC"

    @property
    def grace_ms(self) -> int:
        """How late a tick may be found and still count as on time (not missed).

        At most :data:`MAX_GRACE_MS`, and less than half an interval, so that
        at most one tick is ever on time: after an outage ``catch_up="none"``
        runs no tick but the current one. Cron ticks are a minute apart at
        least, so theirs is the whole 5 s.
        """
        if self.every_ms is None:
            return MAX_GRACE_MS
        return min(MAX_GRACE_MS, self.every_ms // 2)

    def next_after(self, after: int) -> int:
        """The first tick later than ``after`` (ms since the epoch)."""
        if self.every_ms is not None:
            return (after // self.every_ms + 1) * self.every_ms
        for tick in self._cron_ticks(after):
            return tick
        raise ValidationError(f"Cron expression {self.cron!r} never ticks")  # pragma: no cover

    def recent(self, after: int, until: int, at_most: int) -> list[int]:
        """The ``at_most`` latest ticks later than ``after`` and at most ``until``, oldest first."""
        if until <= after:
            return []
        if self.every_ms is not None:
            every = self.every_ms
            last = until // every
            first = max(after // every + 1, last - at_most + 1)
            return [n * every for n in range(first, last + 1)]
        lookback = _FIRST_LOOKBACK_MS
        while True:
            start = max(after, until - lookback)
            ticks: list[int] = []
            for tick in self._cron_ticks(start):
                if tick > until:
                    break
                ticks.append(tick)
            if start == after or len(ticks) >= at_most:
                return ticks[-at_most:]
            lookback *= 4

    def _cron_ticks(self, after: int) -> Iterator[int]:
        """Cron ticks later than ``after``, in order, as cronsim computes them."""
        assert self.cron is not None
        start = datetime.fromtimestamp(after // 1000, zone(self.timezone))
        previous = after
        for moment in _cronsim(self.cron, start):
            tick = int(moment.timestamp()) * 1000
            # cronsim works in local wall-clock time: from a start inside a
            # repeated (fall-back) hour it may name a tick that came earlier.
            if tick > previous:
                previous = tick
                yield tick


def chosen_ticks(
    timetable: Timetable, catch_up: str, after: int, now: int
) -> tuple[list[int], int]:
    """The ticks to run now, oldest first, and the latest tick due (``after`` if none).

    Due ticks are those later than ``after`` (the last tick handled) and at
    most ``now``. The on-time one runs in any case; of the missed ones,
    ``catch_up`` decides. The latest due tick is handled either way, run or
    skipped: the schedule's last tick moves there.
    """
    at_most = MAX_CATCH_UP if catch_up == "all" else 2
    due = timetable.recent(after, now, at_most)
    if not due:
        return [], after
    grace = timetable.grace_ms
    on_time = [tick for tick in due if now - tick <= grace]
    missed = [tick for tick in due if now - tick > grace]
    if catch_up == "all":
        chosen = due
    elif catch_up == "latest":
        chosen = missed[-1:] + on_time
    else:
        chosen = on_time
    return chosen, due[-1]


def tick_label(tick: int) -> str:
    """A tick as ISO-8601 in UTC: the value of the ``durably.scheduled_for`` label."""
    spec = "seconds" if tick % 1000 == 0 else "milliseconds"
    return to_datetime(tick).isoformat(timespec=spec)


def tick_key(name: str, tick: int) -> str:
    """The idempotency key of a schedule's run for one tick: the same in every process."""
    return f"schedule:{name}@{tick_label(tick)}"


def tick_labels(name: str, tick: int, labels: Mapping[str, str] | None) -> dict[str, str]:
    """A scheduled run's labels: the schedule's own, and which schedule and tick made it."""
    return {**(labels or {}), SCHEDULE_LABEL: name, SCHEDULED_FOR_LABEL: tick_label(tick)}


def parse_tick_label(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def zone(name: str) -> tzinfo:
    """The time zone of that IANA name (``UTC`` needs no time zone database)."""
    if name in _UTC_NAMES:
        return timezone.utc
    return ZoneInfo(name)


# -- checking a declaration -------------------------------------------------------------


def check_timetable(cron: object, every: object, timezone_name: object) -> Timetable:
    """A timetable from ``schedule()``'s arguments; ``ValidationError`` if it cannot be one."""
    if (cron is None) == (every is None):
        raise ValidationError("A schedule needs exactly one of cron= or every=")
    tz = _check_timezone(timezone_name)
    if every is not None:
        if tz not in _UTC_NAMES:
            raise ValidationError(
                "timezone applies to cron= schedules only: every= ticks are counted from "
                "the Unix epoch (use a cron expression for local times of day)"
            )
        return Timetable(cron=None, every_ms=_check_every(every), timezone="UTC")
    return Timetable(cron=_check_cron(cron, tz), every_ms=None, timezone=tz)


def check_catch_up(catch_up: object) -> str:
    if catch_up not in CATCH_UP_POLICIES:
        valid = ", ".join(repr(policy) for policy in CATCH_UP_POLICIES)
        raise ValidationError(f"Invalid catch_up: {catch_up!r}. Must be one of: {valid}")
    return str(catch_up)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"A schedule name must be a non-empty string of at most {MAX_NAME_LENGTH} "
            f"characters, got {name!r}"
        )
    return name


def _check_every(every: object) -> int:
    """An interval in whole milliseconds, at least :data:`MIN_EVERY_MS`."""
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds * MS_PER_SECOND < MIN_EVERY_MS
    ):
        raise ValidationError(
            f"every must be a number of seconds or a timedelta of at least 1 second, got {every!r}"
        )
    return int(seconds * MS_PER_SECOND + 0.5)


def _check_timezone(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"timezone must be an IANA time zone name, got {name!r}")
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"Unknown time zone {name!r} (an IANA name such as 'Europe/Berlin'; "
            "without a system time zone database, pip install tzdata)"
        ) from exc
    return name


def _check_cron(cron: object, tz: str) -> str:
    if not isinstance(cron, str):
        raise ValidationError(f"cron must be a string of 5 fields, got {cron!r}")
    expression = " ".join(cron.split())
    if len(expression.split(" ")) != _CRON_FIELDS:
        raise ValidationError(
            f"cron must have 5 fields (minute hour day-of-month month day-of-week), got {cron!r}"
        )
    try:
        next(_cronsim(expression, datetime.now(zone(tz))))  # ValidationError: no cronsim
    except _BadCron as exc:
        raise ValidationError(f"Invalid cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise ValidationError(f"Cron expression {cron!r} never ticks") from None
    return expression


def _cronsim(expression: str, start: datetime) -> Iterator[datetime]:
    """cronsim's iterator over ``expression``'s ticks after ``start``.

    cronsim is an optional dependency (``durably[cron]``): ``every=``
    schedules do without it.
    """
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ValidationError(
            "cron= schedules need the cronsim package: pip install 'durably[cron]'"
        ) from None
    try:
        return CronSim(expression, start)
    except CronSimError as exc:
        raise _BadCron(str(exc)) from None


class _BadCron(Exception):
    """cronsim refused an expression (its own error class is only there when it is installed)."""
