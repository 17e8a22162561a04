"""The terms of a claim, shared by SQLite's statement (:mod:`durably.core.claim`) and
PostgreSQL's (:mod:`durably.core.claim_postgresql`): which runs a worker may take, in
which order, and what taking one writes.

Both statements are built from these pieces, so the two databases cannot
disagree on what is claimable; they differ only in how the candidate is
picked and locked.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..config import Settings
from ..schema import runs, sql_status
from ..status import RunStatus
from .leases import WAS_ABANDONED

LEASED = sql_status(RunStatus.LEASED)
PENDING = sql_status(RunStatus.PENDING)
WAITING = sql_status(RunStatus.WAITING)
NOW = sa.bindparam("claim_now", type_=sa.BigInteger)
_OTHER = runs.alias("other")


def key_is_free(candidate: Any) -> Any:
    """The candidate has no concurrency key, or no live lease holds its key."""
    other = _OTHER
    return sa.or_(
        candidate.c.concurrency_key.is_(None),
        ~sa.exists().where(
            other.c.concurrency_key == candidate.c.concurrency_key,
            other.c.status == LEASED,
            other.c.lease_expires_at > NOW,
        ),
    )


def sql_string(value: str) -> Any:
    """A job name as an SQL string literal (quotes doubled), like the statuses: see
    :func:`durably.schema.sql_status`. The claim is then one fixed text per set of jobs."""
    return sa.literal_column("'" + value.replace("'", "''") + "'")


def in_(column: Any, values: frozenset[str]) -> Any:
    return column.in_([sql_string(value) for value in sorted(values)])


def claim_order(run: Any) -> tuple[Any, ...]:
    return (run.c.priority.desc(), run.c.run_at, run.c.id)


def leased_values() -> dict[str, Any]:
    """What a claim writes on the run it takes: a new lease, and a new fencing generation."""
    return {
        "status": LEASED,
        "lease_owner": sa.bindparam("claim_owner", type_=sa.String),
        "lease_expires_at": sa.bindparam("claim_expires", type_=sa.BigInteger),
        "lease_generation": runs.c.lease_generation + 1,
        "recovery_count": runs.c.recovery_count + sa.case((WAS_ABANDONED, 1), else_=0),
        "started_at": sa.func.coalesce(runs.c.started_at, NOW),
        "updated_at": NOW,
    }


def claim_params(worker_id: str, now: int, settings: Settings) -> dict[str, Any]:
    return {"claim_now": now, "claim_owner": worker_id, "claim_expires": now + settings.lease_ms}
