"""Flow control: a queue's concurrency and rate limits, declared in code.

``durably.queue("emails", concurrency=2, rate_limit=(10, 1.0))`` declares
them (:meth:`durably.Durably.queue`). They are enforced by the claim itself,
in SQL, so they hold across every worker of every process that declared
them (:mod:`durably.core.flow_control`); nothing about them is stored.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .errors import ValidationError
from .triggers import check_queue


@dataclass(frozen=True)
class QueueLimits:
    """A queue's limits, as :meth:`Durably.queue <durably.Durably.queue>` declared them.

    ``concurrency``: at most this many runs of the queue are leased at once,
    across all workers and processes (an expired lease does not count).
    ``rate_limit=(count, per_seconds)``: at most ``count`` runs of the queue
    are claimed in any sliding window of ``per_seconds`` seconds. None: no
    such limit.
    """

    name: str
    concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        name = check_queue(self.name)
        concurrency: object = self.concurrency
        if concurrency is not None and not _positive_int(concurrency):
            raise ValidationError(
                f"Queue {name!r}: concurrency must be a positive integer or None, "
                f"got {concurrency!r}"
            )
        if self.rate_limit is not None:
            object.__setattr__(self, "rate_limit", _check_rate_limit(name, self.rate_limit))

    @property
    def limited(self) -> bool:
        """Whether the queue has any limit (a declaration may have none)."""
        return self.concurrency is not None or self.rate_limit is not None

    @property
    def window_ms(self) -> int | None:
        """The rate limit's window in milliseconds (as claim times are stored); None without."""
        if self.rate_limit is None:
            return None
        return max(1, math.ceil(self.rate_limit[1] * 1000))


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_rate_limit(name: str, value: object) -> tuple[int, float]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        count, per_seconds = value
        if (
            _positive_int(count)
            and isinstance(per_seconds, (int, float))
            and not isinstance(per_seconds, bool)
            and math.isfinite(per_seconds)
            and per_seconds > 0
        ):
            return count, float(per_seconds)
    raise ValidationError(
        f"Queue {name!r}: rate_limit must be (count, per_seconds), a positive integer and a "
        f"positive finite number of seconds, or None; got {value!r}"
    )


class DeclaredQueues:
    """The queue limits one ``Durably`` instance declared; read by every claim it makes.

    :attr:`limits` is an immutable snapshot (the limited queues, by name),
    replaced whole on each declaration, so a claim reads it without a lock
    and can key its cached statement by it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._declared: dict[str, QueueLimits] = {}
        self.limits: tuple[QueueLimits, ...] = ()

    def declare(self, limits: QueueLimits) -> QueueLimits:
        """Add a declaration; the same one again is a no-op, a different one refused.

        Refused rather than replaced: every process must enforce the same
        limits for them to mean anything, and two modules of one application
        declaring a queue differently is a mistake best caught at import.
        """
        with self._lock:
            existing = self._declared.get(limits.name)
            if existing is not None:
                if existing == limits:
                    return existing
                raise ValidationError(
                    f"Queue {limits.name!r} is already declared with other limits: {existing}"
                )
            self._declared[limits.name] = limits
            self.limits = tuple(
                sorted((q for q in self._declared.values() if q.limited), key=lambda q: q.name)
            )
            return limits

    def longest_window_ms(self) -> int | None:
        """The longest rate-limit window declared (ms); None if no queue is rate-limited."""
        windows = [q.window_ms for q in self.limits if q.window_ms is not None]
        return max(windows) if windows else None
