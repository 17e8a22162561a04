"""How a run is claimed: one ``UPDATE … RETURNING`` of the next claimable run.

The candidate is chosen by two index-driven arms, each in claim order
(higher ``priority`` first, then earlier ``run_at``, then id: a ULID, so
creation order), and the first of them is taken:

* the first *pending* run that is due (``run_at`` has come);
* the first *leased* run whose lease has expired (its worker died or lost
  touch; a claim takes it directly, no reaper needed);
* the first *waiting* run that is due: its sleep ended, its wait's deadline
  passed, or its signal arrived (a signal sets ``run_at`` to its own time,
  see :mod:`durably.core.waits`). No write wakes it: its ``run_at`` coming
  is what makes it claimable, and the index of waiting runs, ordered by
  ``run_at``, lets the claim seek past those still asleep.

Each arm takes only runs of the jobs this worker has registered (during a
rolling deploy an old worker leaves a new job's runs to the workers that know
it), of the queues it serves if it was told which, and skips runs whose
concurrency key is held by a live lease of any job, and runs of queues whose
declared limits leave no room (:mod:`durably.core.flow_control`). Keeping the arms
separate keeps the claim cheap however many finished runs the table holds. The claim increments the run's ``lease_generation``,
the fencing token every later write of the new holder carries
(:mod:`durably.core.leases`), and counts a claim of an abandoned lease in
``recovery_count`` (see :func:`recovery_limit_error`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import Settings
from ..flow import QueueLimits
from ..schema import runs, steps
from ..status import StepStatus
from . import claim_postgresql
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
from .lease_writes import release_op
from .leases import ClaimedRun, Lease, labels_of
from .operation import Operation, Read, Transaction, Write


def _first(
    alias_name: str,
    job_names: frozenset[str],
    queues: frozenset[str] | None,
    limits: tuple[QueueLimits, ...],
    *conditions: Any,
) -> Any:
    """The first run in claim order (of an alias of ``runs``) of ``job_names`` (and
    ``queues``) meeting ``conditions``, free keys and queues with room only."""
    candidate = runs.alias(alias_name)
    where = [condition(candidate) for condition in conditions]
    where.append(in_(candidate.c.job_name, job_names))
    if queues is not None:
        where.append(in_(candidate.c.queue, queues))
    if limits:
        where.append(has_room(candidate, limits, NOW))
    return (
        sa.select(candidate.c.id, candidate.c.priority, candidate.c.run_at)
        .where(*where, key_is_free(candidate))
        .order_by(*claim_order(candidate))
        .limit(1)
        .subquery()
    )


def claim_statement(
    job_names: frozenset[str],
    queues: frozenset[str] | None = None,
    limits: tuple[QueueLimits, ...] = (),
) -> sa.Update:
    """The claim of a worker that runs ``job_names`` (from ``queues``; None: any queue),
    within the ``limits`` of the queues it may claim from.

    Built once per set of jobs, queues and limits. Parameters: ``claim_now``,
    ``claim_owner``, ``claim_expires``.
    """
    return _claim_statement(job_names, queues, limits)


@functools.lru_cache(maxsize=64)
def _claim_statement(
    job_names: frozenset[str], queues: frozenset[str] | None, limits: tuple[QueueLimits, ...]
) -> sa.Update:
    pending = _first(
        "pending",
        job_names,
        queues,
        limits,
        lambda run: run.c.status == PENDING,
        lambda run: run.c.run_at <= NOW,
    )
    expired = _first(
        "expired",
        job_names,
        queues,
        limits,
        lambda run: run.c.status == LEASED,
        lambda run: run.c.lease_expires_at <= NOW,
    )
    waking = _first(
        "waking",
        job_names,
        queues,
        limits,
        lambda run: run.c.status == WAITING,
        lambda run: run.c.run_at <= NOW,
    )
    arms = sa.union_all(sa.select(pending), sa.select(expired), sa.select(waking)).subquery()
    candidate = sa.select(arms.c.id).order_by(*claim_order(arms)).limit(1)
    return (
        runs.update()
        .where(runs.c.id == candidate.scalar_subquery())
        .values(leased_values())
        .returning(*runs.c)
    )


class _Plan(NamedTuple):
    statement: sa.Update
    windows: Mapping[str, int]
    """The rate-limited queues the claim may take a run from: their windows (ms)."""


@functools.lru_cache(maxsize=64)
def _plan(
    job_names: frozenset[str], queues: frozenset[str] | None, limits: tuple[QueueLimits, ...]
) -> _Plan:
    """The claim within the limits of the queues it may claim from (those it serves)."""
    served = tuple(queue for queue in limits if queues is None or queue.name in queues)
    windows = {q.name: q.window_ms for q in served if q.window_ms is not None}
    return _Plan(claim_statement(job_names, queues, served), windows)


def claim_op(
    worker_id: str,
    clock: Callable[[], int],
    settings: Settings,
    job_names: Collection[str],
    queues: frozenset[str] | None = None,
    limits: tuple[QueueLimits, ...] = (),
    dialect: str = "sqlite",
) -> Operation[ClaimedRun | None]:
    """Lease the next claimable run of ``job_names`` for ``worker_id``: one atomic statement.

    On PostgreSQL (``dialect``) the claim locks what SQLite's single writer
    gives for free (:mod:`durably.core.claim_postgresql`).

    Runs of the queues in ``limits`` are claimed only while their queue has
    room (:mod:`durably.core.flow_control`). A run that had completed steps
    before (it is being recovered) has them read afterwards: from the moment
    the claim commits, only this lease may write them, so the later read
    sees exactly what is stored. If that read fails, the lease is given back
    at once rather than left to expire.
    """
    if not job_names:
        return None
    started = time.monotonic()
    if dialect == "postgresql":
        locked = claim_postgresql.plan(frozenset(job_names), queues, limits)
        found: tuple[Mapping[str, Any] | None, int]
        found = yield Transaction(
            claim_postgresql.claim_locked, (locked, worker_id, clock, settings)
        )
        row, now = found
    else:
        row, now = yield from _claim_row(
            worker_id, clock, settings, frozenset(job_names), queues, limits
        )
    if row is None:
        return None
    lease = Lease(
        run_id=row["id"],
        job_name=row["job_name"],
        generation=row["lease_generation"],
        owner=worker_id,
        labels=labels_of(row),
        expires_at=row["lease_expires_at"],
        # Counted from before the claim, so the local deadline is never
        # later than the expiry the database holds.
        deadline=started + settings.stale_threshold,
    )
    history = StepHistory({}, {})
    if row["lease_generation"] > 1:  # claimed before: it may have stored steps
        try:
            history = yield Read(step_history, (row["id"],))
        except Exception:
            with contextlib.suppress(Exception):
                yield from release_op(lease, now)
            raise
    return ClaimedRun(
        row=row, lease=lease, completed_steps=history.completed, step_failures=history.failures
    )


def _claim_row(
    worker_id: str,
    clock: Callable[[], int],
    settings: Settings,
    job_names: frozenset[str],
    queues: frozenset[str] | None,
    limits: tuple[QueueLimits, ...],
) -> Operation[tuple[Mapping[str, Any] | None, int]]:
    """The claimed run's row (None: nothing claimable) and the time the claim counted from.

    The claim is one prebuilt ``Write`` (which :func:`~durably.core.operation.together`
    can join to the write before it), unless it may take a run of a
    rate-limited queue: that claim must add its row to the queue's window in
    its own transaction, as a :class:`Transaction`.
    """
    if not limits:
        statement, windows = claim_statement(job_names, queues), None
    else:
        statement, windows = _plan(job_names, queues, limits)
    if windows:
        found: tuple[Mapping[str, Any] | None, int]
        found = yield Transaction(_claim_counted, (statement, worker_id, clock, settings, windows))
        return found
    now = clock()
    (outcome,) = yield Write([(statement, claim_params(worker_id, now, settings))])
    return (outcome.rows[0] if outcome.rows else None), now


def _claim_counted(
    conn: Connection,
    statement: sa.Update,
    worker_id: str,
    clock: Callable[[], int],
    settings: Settings,
    windows: Mapping[str, int],
) -> tuple[Mapping[str, Any] | None, int]:
    """The claim, and the claim's row in its rate-limited queue's window, in one transaction.

    The time is read once the transaction holds the write lock, so the time
    a claim counts from and records is when it happened, not when it was
    asked for (it may have waited for the lock meanwhile).
    """
    now = clock()
    found = conn.execute(statement, claim_params(worker_id, now, settings)).mappings().first()
    if found is None:
        return None, now
    row = dict(found)
    window = windows.get(row["queue"])
    if window is not None:
        record_claim(conn, row["queue"], now, window)
    return row, now


class StepHistory(NamedTuple):
    completed: dict[str, str | None]
    """Step name -> stored JSON output of the run's completed steps: the replay cache."""
    failures: dict[str, int]
    """Step name -> how many times the step failed (a step's own retry policy counts them)."""


def step_history(conn: Connection, run_id: str) -> StepHistory:
    """What a resumed run needs of its stored steps: outputs to replay, failures to count."""
    completed: dict[str, str | None] = {}
    failures: dict[str, int] = {}
    rows = conn.execute(
        sa.select(steps.c.name, steps.c.status, steps.c.output).where(steps.c.run_id == run_id)
    )
    for name, status, output in rows:
        if status == StepStatus.COMPLETED.value:
            completed[name] = output
        elif status == StepStatus.FAILED.value:
            failures[name] = failures.get(name, 0) + 1
    return StepHistory(completed, failures)


def recovery_limit_error(recoveries: int, max_recoveries: int | None) -> str | None:
    """Why a run taken over ``recoveries`` times must fail instead of run; None if it may run.

    A run whose lease keeps expiring is most likely killing its worker
    (``os._exit``, out of memory, a crash in native code): without a limit
    every worker in turn would claim it and die.
    """
    if max_recoveries is None or recoveries <= max_recoveries:
        return None
    return (
        f"The run exceeded its recovery limit: its worker stopped without finishing it "
        f"{recoveries} times (max_recoveries={max_recoveries}); a step may be crashing "
        "the worker process"
    )
