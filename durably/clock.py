"""Time as durably stores it: integer milliseconds since the Unix epoch, UTC.

Integers compare correctly in SQL on every backend, index compactly, and need
no parsing on the hot path; the public models turn them into timezone-aware
``datetime`` objects.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_datetime(ms: int) -> datetime:
    # ``tz`` passed by position: as a keyword it costs measurably more, and
    # every run a trigger returns or a listing reads has two or more times.
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def maybe_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else to_datetime(ms)


def to_ms(value: datetime) -> int:
    """Milliseconds for an aware datetime; a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)
