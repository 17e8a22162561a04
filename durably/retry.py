"""Retry policies: how often a failed run (or step) is tried again, and how long it waits."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import ValidationError

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INITIAL_DELAY = 1.0
DEFAULT_BACKOFF = 2.0
DEFAULT_MAX_DELAY = 3600.0


@dataclass(frozen=True)
class Retry:
    """Try a failed run again, up to ``max_attempts`` attempts in all (the first included).

    Before attempt ``n + 1`` the run waits ``min(max_delay, initial_delay *
    backoff ** (n - 1))`` seconds; with ``jitter`` a random part of that
    ("equal jitter": between half of it and all of it), so runs that failed
    together do not all come back at the same moment. Only exceptions that
    are instances of ``retry_on`` are retried; others fail the run at once.

    While it waits the run is ``pending`` and holds no lease and no worker
    slot; it resumes at the step that failed, replaying the completed ones.
    On ``@durably.job(..., retry=...)`` it covers the whole job; on
    ``step.run(..., retry=...)`` the failures of that step only.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_DELAY
    backoff: float = DEFAULT_BACKOFF
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValidationError(
                f"Retry max_attempts must be an integer of at least 1, got {self.max_attempts!r}"
            )
        for name, minimum in (("initial_delay", 0.0), ("max_delay", 0.0), ("backoff", 1.0)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < minimum
            ):
                raise ValidationError(
                    f"Retry {name} must be a finite number of at least {minimum:g}, got {value!r}"
                )
        retry_on: object = self.retry_on
        if isinstance(retry_on, type):  # retry_on=ValueError: one class is a tuple of one
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            raise ValidationError("Retry retry_on must be a tuple of exception classes")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 = the first) failed."""
        ceiling = min(self.max_delay, self.initial_delay * self.backoff ** min(attempt - 1, 1000))
        if not self.jitter:
            return ceiling
        return ceiling / 2 + random.random() * ceiling / 2

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt``, which raised ``exc``, is followed by another."""
        return attempt < self.max_attempts and isinstance(exc, self.retry_on)


def check_retry(value: object, where: str) -> Retry | None:
    """A validated ``retry=`` option: a :class:`Retry`, or None for no retries."""
    if value is None or isinstance(value, Retry):
        return value
    raise ValidationError(
        f"{where} retry must be a durably.Retry or None, got {value!r} "
        "(for three attempts in all: retry=Retry(max_attempts=3))"
    )
