"""How a run is claimed: one ``UPDATE … RETURNING`` of the next claimable run.

The candidate is chosen by two index-driven arms, merged by id (that is, by
creation time: ids are ULIDs):

* the oldest *pending* run;
* the oldest *leased* run whose lease has expired (its worker died or lost
  touch; a claim takes it directly, no reaper needed).

Each arm takes only runs of the jobs this worker has registered (during a
rolling deploy an old worker leaves a new job's runs to the workers that know
it) and skips runs whose concurrency key is held by a live lease of any
job. Keeping the arms separate keeps the claim cheap however many finished
runs the table holds. The claim increments the run's ``lease_generation``,
the fencing token every later write of the new holder carries
(:mod:`durably.core.leases`), and counts a claim of an abandoned lease in
``recovery_count`` (see :func:`recovery_limit_error`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import Settings
from ..schema import runs, sql_status, steps
from ..status import RunStatus, StepStatus
from .lease_writes import release_op
from .leases import WAS_ABANDONED, ClaimedRun, Lease, labels_of
from .operation import Operation, Read, Write

_LEASED = sql_status(RunStatus.LEASED)
_PENDING = sql_status(RunStatus.PENDING)
_NOW = sa.bindparam("claim_now", type_=sa.BigInteger)
_OTHER = runs.alias("other")


def _key_is_free(candidate: Any) -> Any:
    """The candidate has no concurrency key, or no live lease holds its key."""
    other = _OTHER
    return sa.or_(
        candidate.c.concurrency_key.is_(None),
        ~sa.exists().where(
            other.c.concurrency_key == candidate.c.concurrency_key,
            other.c.status == _LEASED,
            other.c.lease_expires_at > _NOW,
        ),
    )


def _sql_string(value: str) -> Any:
    """A job name as an SQL string literal (quotes doubled), like the statuses: see
    :func:`durably.schema.sql_status`. The claim is then one fixed text per set of jobs."""
    return sa.literal_column("'" + value.replace("'", "''") + "'")


def _oldest(alias_name: str, job_names: frozenset[str], *conditions: Any) -> Any:
    """The id of the oldest run (of an alias of ``runs``) of ``job_names`` meeting
    ``conditions``, free keys only."""
    candidate = runs.alias(alias_name)
    where = [condition(candidate) for condition in conditions]
    names = [_sql_string(name) for name in sorted(job_names)]
    return (
        sa.select(candidate.c.id)
        .where(*where, candidate.c.job_name.in_(names), _key_is_free(candidate))
        .order_by(candidate.c.id)
        .limit(1)
        .subquery()
    )


@functools.lru_cache(maxsize=64)
def claim_statement(job_names: frozenset[str]) -> sa.Update:
    """The claim of a worker that runs ``job_names``; built once per set of jobs.

    Parameters: ``claim_now``, ``claim_owner``, ``claim_expires``.
    """
    pending = _oldest("pending", job_names, lambda run: run.c.status == _PENDING)
    expired = _oldest(
        "expired",
        job_names,
        lambda run: run.c.status == _LEASED,
        lambda run: run.c.lease_expires_at <= _NOW,
    )
    both = sa.union_all(sa.select(pending.c.id), sa.select(expired.c.id)).subquery()
    candidate = sa.select(both.c.id).order_by(both.c.id).limit(1)
    return (
        runs.update()
        .where(runs.c.id == candidate.scalar_subquery())
        .values(
            status=_LEASED,
            lease_owner=sa.bindparam("claim_owner", type_=sa.String),
            lease_expires_at=sa.bindparam("claim_expires", type_=sa.BigInteger),
            lease_generation=runs.c.lease_generation + 1,
            recovery_count=runs.c.recovery_count + sa.case((WAS_ABANDONED, 1), else_=0),
            started_at=sa.func.coalesce(runs.c.started_at, _NOW),
            updated_at=_NOW,
        )
        .returning(*runs.c)
    )


def claim_op(
    worker_id: str, now: int, settings: Settings, job_names: Collection[str]
) -> Operation[ClaimedRun | None]:
    """Lease the next claimable run of ``job_names`` for ``worker_id``: one atomic statement.

    A run that had completed steps before (it is being recovered) has them
    read afterwards: from the moment the claim commits, only this lease may
    write them, so the later read sees exactly what is stored. If that read
    fails, the lease is given back at once rather than left to expire.
    """
    if not job_names:
        return None
    statement = claim_statement(frozenset(job_names))
    started = time.monotonic()
    params = {"claim_now": now, "claim_owner": worker_id, "claim_expires": now + settings.lease_ms}
    (outcome,) = yield Write([(statement, params)])
    if not outcome.rows:
        return None
    row = outcome.rows[0]
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
    completed: dict[str, str | None] = {}
    if row["lease_generation"] > 1:  # claimed before: it may have completed steps
        try:
            completed = yield Read(completed_steps, (row["id"],))
        except Exception:
            with contextlib.suppress(Exception):
                yield from release_op(lease, now)
            raise
    return ClaimedRun(row=row, lease=lease, completed_steps=completed)


def completed_steps(conn: Connection, run_id: str) -> dict[str, str | None]:
    """Step name -> stored JSON output of a run's completed steps: the replay cache."""
    return dict(
        conn.execute(
            sa.select(steps.c.name, steps.c.output).where(
                steps.c.run_id == run_id, steps.c.status == StepStatus.COMPLETED.value
            )
        ).all()  # a list: a Result has .keys(), so dict() would take it for a mapping
    )


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
