"""Worker settings and their defaults: the one place a default is written down."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import timedelta

from .errors import ValidationError

DEFAULT_POLLING_INTERVAL = 1.0
"""Seconds an idle worker waits before looking for work again (other processes' triggers)."""
DEFAULT_HEARTBEAT_INTERVAL = 5.0
"""Seconds between lease renewals of a running run."""
DEFAULT_STALE_THRESHOLD = 30.0
"""Seconds without a heartbeat after which a run's lease expires and any worker may reclaim it."""
DEFAULT_MAX_CONCURRENT_RUNS = 1
MAX_CONCURRENT_RUNS_LIMIT = 1000
DEFAULT_LOCK_TIMEOUT = 30.0
"""Seconds a database operation keeps retrying while another connection holds the write lock."""
DEFAULT_PURGE_LIMIT = 500
DEFAULT_LIST_LIMIT = 50
"""Runs ``durably runs list`` shows unless told ``--limit``: a screenful, newest first."""
MAINTENANCE_INTERVAL = 60.0
"""Seconds between idle maintenance passes (retention purge, worker reaping, WAL checkpoint)."""
DEFAULT_MAX_RECOVERIES = 5
"""Times a run is taken over after its worker died before it is failed as a poison run."""
AUTO_PURGE_BATCH = 100
WORKER_DEAD_AFTER_STALE_THRESHOLDS = 10
"""A worker row whose heartbeat is this many stale thresholds old is deleted by the reaper."""
DEFAULT_SIGNAL_STOP_TIMEOUT = 20.0
"""Seconds ``install_signal_handlers`` gives in-flight runs: under the 30 s that gunicorn
and Kubernetes wait after SIGTERM before they kill the process."""

_DURATION = re.compile(r"^(\d+)([dhm])$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60}


def parse_duration(value: timedelta | str, what: str = "retain_runs") -> timedelta:
    """``"30d"``, ``"24h"``, ``"60m"`` or a ``timedelta``; ``what`` names it in errors.

    One spelling for every "how long ago" a user writes: ``retain_runs``,
    ``purge_runs(older_than=...)`` and ``durably purge --older-than``.
    """
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValidationError(f"{what} must be positive")
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            f'Invalid duration for {what}: "{value}". Use e.g. "30d", "24h" or "60m", '
            "or a timedelta."
        )
    amount = int(match.group(1))
    if amount == 0:
        raise ValidationError(f"{what} must be positive")
    return timedelta(seconds=amount * _UNIT_SECONDS[match.group(2)])


class Inherit(enum.Enum):
    """The type of :data:`INHERIT`."""

    INHERIT = "inherit"


INHERIT = Inherit.INHERIT
"""A job option left unset: the job uses the ``Durably`` instance's setting."""


def check_max_recoveries(value: int | None) -> int | None:
    """A validated ``max_recoveries``: a count of recoveries, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            f"max_recoveries must be a non-negative integer or None, got {value!r}"
        )
    return value


def check_timeout(value: float | None) -> float | None:
    """A validated job ``timeout``: positive seconds, or None for no limit."""
    return None if value is None else _positive("timeout", value)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Settings:
    """Validated worker settings; built by :class:`durably.Durably`."""

    polling_interval: float = DEFAULT_POLLING_INTERVAL
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    stale_threshold: float = DEFAULT_STALE_THRESHOLD
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    preserve_steps: bool = False
    retain_runs: timedelta | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES

    @classmethod
    def build(
        cls,
        *,
        polling_interval: float,
        heartbeat_interval: float,
        stale_threshold: float,
        max_concurrent_runs: int,
        preserve_steps: bool,
        retain_runs: timedelta | str | None,
        lock_timeout: float,
        max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
    ) -> Settings:
        polling_interval = _positive("polling_interval", polling_interval)
        heartbeat_interval = _positive("heartbeat_interval", heartbeat_interval)
        stale_threshold = _positive("stale_threshold", stale_threshold)
        lock_timeout = _positive("lock_timeout", lock_timeout)
        if heartbeat_interval >= stale_threshold:
            raise ValidationError(
                "heartbeat_interval must be shorter than stale_threshold "
                f"({heartbeat_interval} >= {stale_threshold}); otherwise live runs look stale"
            )
        if (
            isinstance(max_concurrent_runs, bool)
            or not isinstance(max_concurrent_runs, int)
            or not 1 <= max_concurrent_runs <= MAX_CONCURRENT_RUNS_LIMIT
        ):
            raise ValidationError(
                f"max_concurrent_runs must be an integer between 1 and {MAX_CONCURRENT_RUNS_LIMIT}"
            )
        return cls(
            polling_interval=polling_interval,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            max_concurrent_runs=max_concurrent_runs,
            preserve_steps=bool(preserve_steps),
            retain_runs=None if retain_runs is None else parse_duration(retain_runs),
            lock_timeout=lock_timeout,
            max_recoveries=check_max_recoveries(max_recoveries),
        )

    @property
    def lease_ms(self) -> int:
        return int(self.stale_threshold * 1000)
