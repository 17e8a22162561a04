"""Flow control in SQL: a queue's concurrency and rate limits, counted by the claim itself.

The limits a ``Durably`` declared (:class:`durably.flow.QueueLimits`) become
part of its claim statement (:mod:`durably.core.claim`): a run of a limited
queue is a candidate only while its queue has room. The counts are made in
the claim's own write transaction, which SQLite serialises, so every
worker of every process sees the claims of the others and the limits hold
without any coordination between them:

* **concurrency**: the live leases of the queue (``lease_expires_at`` not
  yet past: an expired lease, whose worker died, holds no place), counted
  on the partial index of leased runs;
* **rate limit**: the queue's claims whose time falls in the window, read
  from ``durably_queue_claims`` on its ``(queue, claimed_at)`` index. The
  claim of a run of a rate-limited queue adds its row there in the same
  transaction (:func:`record_claim`).

Each count stops at the limit (``LIMIT``), and does not depend on the
candidate, so SQLite evaluates it once per claim, not once per run it looks
at. A full queue does not block the others: its runs are passed over and the
claim takes the next run in claim order. (They are still walked past in the
claim index, as runs of jobs or queues a worker does not serve are.)

PostgreSQL runs claims side by side, so there the counts alone would not
hold the limits: the claim first takes an advisory lock per limited queue
(:mod:`durably.core.claim_postgresql`, where the choice is argued).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..flow import QueueLimits
from ..schema import queue_claims, runs, sql_status
from ..status import RunStatus
from .operation import Operation, Write

RECORD_MARGIN_MS = 60_000
"""How long a claim's row is kept past its queue's window.

A claim counts the window before the time it read, and may commit a moment
later (it waited for the write lock): a row must outlive its window by more
than any such wait, or a late claim would miss it."""

_LEASED = sql_status(RunStatus.LEASED)
_LIVE = runs.alias("live")

_RECORD_CLAIM = queue_claims.insert().values(
    queue=sa.bindparam("queue", type_=sa.String),
    claimed_at=sa.bindparam("claimed_at", type_=sa.BigInteger),
)
_PRUNE_QUEUE = queue_claims.delete().where(
    queue_claims.c.queue == sa.bindparam("queue", type_=sa.String),
    queue_claims.c.claimed_at < sa.bindparam("before", type_=sa.BigInteger),
)
_PRUNE_ALL = queue_claims.delete().where(
    queue_claims.c.claimed_at < sa.bindparam("before", type_=sa.BigInteger)
)


def _literal(value: str | int) -> Any:
    """A name or a limit as an SQL literal, so the claim is one fixed text per set of limits."""
    if isinstance(value, int):
        return sa.literal_column(str(value))
    return sa.literal_column("'" + value.replace("'", "''") + "'")


def _reaches(rows: sa.Select[Any], limit: int) -> Any:
    """Whether ``rows`` has at least ``limit`` rows; counting stops there."""
    counted = sa.select(sa.func.count()).select_from(rows.limit(_literal(limit)).subquery())
    return counted.scalar_subquery() >= _literal(limit)


def _full(queue: QueueLimits, now: Any) -> Any:
    """The queue has no room for one more claim now."""
    name = _literal(queue.name)
    full = []
    if queue.concurrency is not None:
        leased = (
            sa.select(_LIVE.c.id)
            .where(_LIVE.c.status == _LEASED, _LIVE.c.lease_expires_at > now, _LIVE.c.queue == name)
            .correlate(None)
        )
        full.append(_reaches(leased, queue.concurrency))
    if queue.rate_limit is not None:
        assert queue.window_ms is not None
        recent = (
            sa.select(queue_claims.c.id)
            .where(
                queue_claims.c.queue == name,
                queue_claims.c.claimed_at > now - _literal(queue.window_ms),
            )
            .correlate(None)
        )
        full.append(_reaches(recent, queue.rate_limit[0]))
    return sa.or_(*full)


def has_room(candidate: Any, limits: tuple[QueueLimits, ...], now: Any) -> Any:
    """The candidate run's queue is not a limited queue that is full ``now``."""
    return sa.and_(
        *(
            sa.or_(candidate.c.queue != _literal(queue.name), sa.not_(_full(queue, now)))
            for queue in limits
        )
    )


def record_claim(conn: Connection, queue: str, now: int, window_ms: int) -> None:
    """Count a claim of a rate-limited queue: its row, in the claim's transaction.

    The queue's rows that no claim can count any more go at the same time,
    so a busy queue's rows stay few even when its workers are never idle.
    """
    conn.execute(_RECORD_CLAIM, {"queue": queue, "claimed_at": now})
    conn.execute(_PRUNE_QUEUE, {"queue": queue, "before": now - window_ms - RECORD_MARGIN_MS})


def prune_claims_op(now: int, longest_window_ms: int | None) -> Operation[None]:
    """Delete the claim rows older than the longest window declared (idle maintenance).

    Rows of queues no longer rate-limited, which no claim prunes, go here.
    """
    if longest_window_ms is None:
        return
    yield Write([(_PRUNE_ALL, {"before": now - longest_window_ms - RECORD_MARGIN_MS})])
