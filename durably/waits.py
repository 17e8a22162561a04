"""What durable waits hand back: a wait as stored (:class:`Wait`) and how it ended (:class:`WaitResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from . import serialization
from .clock import maybe_datetime, to_datetime
from .serialization import Serializer
from .status import WaitStatus


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What ``step.wait_for(wait)`` returns: the signal's payload, or a timeout.

    ``type`` is ``"signal"`` (``payload`` is what ``durably.signal`` sent) or
    ``"timeout"`` (the deadline passed first; ``payload`` is None).
    """

    type: Literal["signal", "timeout"]
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Wait:
    """A durable wait of a run (``step.prepare_wait``) or a durable sleep (``step.sleep``).

    ``id`` is the address to hand to whoever will signal it
    (``durably.signal(wait.id, payload)``). Times are aware UTC datetimes
    read from the database's clock.
    """

    id: str
    run_id: str
    name: str
    kind: Literal["signal", "sleep"]
    status: WaitStatus
    metadata: Any
    payload: Any
    signal_id: str | None
    deadline_at: datetime | None
    """Fixed when the wait was first prepared; None: it waits as long as it takes."""
    created_at: datetime
    suspended_at: datetime | None
    """When the run first gave up its worker to wait for it; None if it never had to."""
    resolved_at: datetime | None
    """When its signal came, or its deadline (a timeout)."""
    resumed_at: datetime | None
    """When a worker first took the run up again after the result, if it had suspended."""

    @property
    def is_resolved(self) -> bool:
        return self.status in (WaitStatus.SIGNALLED, WaitStatus.TIMED_OUT)

    @property
    def result(self) -> WaitResult | None:
        """What ``wait_for`` returns for it; None while it has no result."""
        if self.status == WaitStatus.SIGNALLED:
            return WaitResult("signal", self.payload)
        if self.status == WaitStatus.TIMED_OUT:
            return WaitResult("timeout")
        return None

    @property
    def input_wait(self) -> timedelta | None:
        """How long the suspended run waited for the input (its signal or its deadline).

        Zero if the result was there before the run had to wait; None until there is one.
        """
        if not self.is_resolved or self.resolved_at is None:
            return None
        if self.suspended_at is None:
            return timedelta(0)
        return max(timedelta(0), self.resolved_at - self.suspended_at)

    @property
    def slot_wait(self) -> timedelta | None:
        """How long the run then waited for a worker slot to take it up again.

        Zero if it never suspended; None until a worker has resumed it.
        """
        if not self.is_resolved or self.resolved_at is None:
            return None
        if self.suspended_at is None:
            return timedelta(0)
        if self.resumed_at is None:
            return None
        return max(timedelta(0), self.resumed_at - max(self.resolved_at, self.suspended_at))

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, serializer: Serializer) -> Wait:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            name=row["name"],
            kind=row["kind"],
            status=WaitStatus(row["status"]),
            metadata=serialization.load_or_text(serializer, row["metadata"]),
            payload=serialization.load_or_text(serializer, row["payload"]),
            signal_id=row["signal_id"],
            deadline_at=maybe_datetime(row["deadline_at"]),
            created_at=to_datetime(row["created_at"]),
            suspended_at=maybe_datetime(row["suspended_at"]),
            resolved_at=maybe_datetime(row["resolved_at"]),
            resumed_at=maybe_datetime(row["resumed_at"]),
        )
