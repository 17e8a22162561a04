"""The claim on PostgreSQL: one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``.

The candidate is the first claimable run in claim order, by the same terms
as SQLite's claim (:mod:`durably.core.claim_terms`): a due pending run, an
expired lease, a waiting run whose time came. PostgreSQL cannot lock rows
of a ``UNION``, so the three arms are one ``OR`` here (the planner combines
the partial indexes). ``FOR UPDATE SKIP LOCKED`` locks the candidate and
passes over rows another transaction holds, so concurrent workers never
wait on each other's claims and never take the same run: a row is re-read
once locked, and one that another claim has just leased no longer matches.

What SQLite's single writer gives for free must be made here. SQLite counts
a queue's leases, and looks for a live lease of a concurrency key, inside a
write transaction no other process can run beside; under PostgreSQL's READ
COMMITTED two claims running side by side do not see each other's
uncommitted lease, and could both take the last place of a queue or two
runs of one key. So:

* **queue limits**: before a claim that may take a run of a limited queue,
  the transaction takes a transaction-scoped advisory lock per limited
  queue it serves (``pg_advisory_xact_lock``, in name order, so two claims
  never wait on each other in a circle). The claim statement that follows
  takes its snapshot after the lock, so it counts every lease and every
  rate-limit row committed by the claims before it. Claims of the same
  limited queues are serialised, as SQLite serialises all claims; claims of
  workers without limits are not slowed.
* **concurrency keys**: any run may carry one, so claims are not serialised
  for them. A claim that took a run with a key then takes that key's
  advisory lock and checks, in a new statement (a fresh snapshot), that no
  other live lease holds the key. Every claim of a keyed run does the same
  before it commits, and holds the lock until then: of two claims of one
  key, the second to get the lock sees the first one's lease and is undone
  (its savepoint rolled back) and the claim tries again, passing the key by.

A constraint could not say this: a key's lease that expired still reads
``leased`` until it is claimed again, and must not block the key, and
``lease_expires_at`` compared with the time is no index predicate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import Settings
from ..flow import QueueLimits
from ..schema import runs
from .claim_terms import (
    LEASED,
    NOW,
    PENDING,
    WAITING,
    claim_order,
    claim_params,
    in_,
    key_is_free,
    leased_values,
)
from .flow_control import has_room, record_claim

CLAIM_TRIES = 5
"""Claims a transaction makes when the runs it takes turn out to have their key held.
Each try passes by the keys found held before it; after the last the claim finds nothing
this time, and the worker claims again at its next poll."""
_QUEUE_LOCK = "durably.queue:"
_KEY_LOCK = "durably.concurrency_key:"

_KEY_HELD = (
    sa.select(sa.literal(1))
    .select_from(runs)
    .where(
        runs.c.concurrency_key == sa.bindparam("key", type_=sa.String),
        runs.c.id != sa.bindparam("run_id", type_=sa.String),
        runs.c.status == LEASED,
        runs.c.lease_expires_at > sa.bindparam("now", type_=sa.BigInteger),
    )
    .limit(1)
)


@functools.lru_cache(maxsize=64)
def claim_statement(
    job_names: frozenset[str], queues: frozenset[str] | None, limits: tuple[QueueLimits, ...]
) -> sa.Update:
    """The claim of a worker that runs ``job_names`` (from ``queues``), within ``limits``.

    Parameters: ``claim_now``, ``claim_owner``, ``claim_expires``.
    """
    candidate = runs.alias("candidate")
    claimable = sa.or_(
        sa.and_(candidate.c.status == PENDING, candidate.c.run_at <= NOW),
        sa.and_(candidate.c.status == LEASED, candidate.c.lease_expires_at <= NOW),
        sa.and_(candidate.c.status == WAITING, candidate.c.run_at <= NOW),
    )
    where = [claimable, in_(candidate.c.job_name, job_names), key_is_free(candidate)]
    if queues is not None:
        where.append(in_(candidate.c.queue, queues))
    if limits:
        where.append(has_room(candidate, limits, NOW))
    picked = (
        sa.select(candidate.c.id)
        .where(*where)
        .order_by(*claim_order(candidate))
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (
        runs.update()
        .where(runs.c.id.in_(picked.scalar_subquery()))
        .values(leased_values())
        .returning(*runs.c)
    )


class Plan(NamedTuple):
    statement: sa.Update
    limited: tuple[str, ...]
    """The limited queues the claim may take a run from: their locks are taken first."""
    windows: Mapping[str, int]
    """The rate-limited ones: their windows (ms)."""


@functools.lru_cache(maxsize=64)
def plan(
    job_names: frozenset[str], queues: frozenset[str] | None, limits: tuple[QueueLimits, ...]
) -> Plan:
    """The claim within the limits of the queues it may claim from (those it serves)."""
    served = tuple(queue for queue in limits if queues is None or queue.name in queues)
    windows = {q.name: q.window_ms for q in served if q.window_ms is not None}
    limited = tuple(sorted(q.name for q in served))
    return Plan(claim_statement(job_names, queues, served), limited, windows)


def lock(conn: Connection, name: str) -> None:
    """Take the transaction-scoped advisory lock called ``name`` (waits for it)."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))


def claim_locked(
    conn: Connection, plan: Plan, worker_id: str, clock: Callable[[], int], settings: Settings
) -> tuple[Mapping[str, Any] | None, int]:
    """Claim in ``conn``'s transaction, race-free for limits and keys (see the module)."""
    statement, limited, windows = plan
    for queue in limited:
        lock(conn, _QUEUE_LOCK + queue)
    now = clock()
    for _ in range(CLAIM_TRIES):
        attempt = conn.begin_nested()
        found = conn.execute(statement, claim_params(worker_id, now, settings)).mappings().first()
        if found is None:
            attempt.commit()
            return None, now
        row = dict(found)
        key = row["concurrency_key"]
        if key is not None:
            lock(conn, _KEY_LOCK + key)
            held = conn.execute(_KEY_HELD, {"key": key, "run_id": row["id"], "now": now})
            if held.first() is not None:
                attempt.rollback()
                continue
        attempt.commit()
        window = windows.get(row["queue"])
        if window is not None:
            record_claim(conn, row["queue"], now, window)
        return row, now
    return None, now
