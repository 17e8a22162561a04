"""Run rows outside a lease: reading them, and cancelling, retrying, deleting, purging.

Reads are plain functions of a SQLAlchemy ``Connection``, run in a read
transaction (:meth:`durably.storage.Database.read`, or an embedded replica).
Each change is an operation whose write checks and changes in the same
statements: one request to a remote server, so no write lock is held across
round trips. When a write changes nothing, a read afterwards says why
(unknown run, wrong status, a key taken).

Operations done by the holder of a run's lease live in
:mod:`durably.core.lease_writes`; creating runs in :mod:`durably.core.enqueue`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..errors import ConflictError, NotFoundError
from ..schema import (
    COUNTED_STEP_COUNTERS,
    RUN_COLUMNS,
    logs,
    run_labels,
    runs,
    sql_status,
    step_attempts,
    steps,
    waits,
)
from ..status import ACTIVE_STATUSES, RETRYABLE_STATUSES, TERMINAL_STATUSES, RunStatus, WaitStatus
from ..storage.statements import Outcome
from .operation import Operation, Read, Write

_SQL_TERMINAL = [sql_status(s) for s in sorted(TERMINAL_STATUSES)]
_SQL_ACTIVE = [sql_status(s) for s in sorted(ACTIVE_STATUSES)]
_SQL_RETRYABLE = [sql_status(s) for s in sorted(RETRYABLE_STATUSES)]
_RUN_ID = sa.bindparam("run_id", type_=sa.String)
_NOW = sa.bindparam("now", type_=sa.BigInteger)


@dataclass(frozen=True)
class RunFilter:
    status: Sequence[str] = ()
    job_name: Sequence[str] = ()
    labels: Mapping[str, str] | None = None
    limit: int | None = None
    offset: int = 0


# -- reading ----------------------------------------------------------------


def get_run(conn: Connection, run_id: str) -> RowMapping | None:
    return conn.execute(sa.select(*RUN_COLUMNS).where(runs.c.id == run_id)).mappings().first()


def require_run(conn: Connection, run_id: str) -> RowMapping:
    row = get_run(conn, run_id)
    if row is None:
        raise NotFoundError(f"Run not found: {run_id}")
    return row


def list_runs(conn: Connection, run_filter: RunFilter) -> list[RowMapping]:
    """Runs newest first: by id, a ULID, which sorts by creation time and is unique,
    so pages never overlap."""
    query = sa.select(*RUN_COLUMNS)
    if run_filter.status:
        query = query.where(runs.c.status.in_(list(run_filter.status)))
    if run_filter.job_name:
        query = query.where(runs.c.job_name.in_(list(run_filter.job_name)))
    for key, value in (run_filter.labels or {}).items():
        query = query.where(
            sa.exists().where(
                run_labels.c.run_id == runs.c.id,
                run_labels.c.key == key,
                run_labels.c.value == value,
            )
        )
    query = query.order_by(runs.c.id.desc())
    if run_filter.limit is not None:
        query = query.limit(run_filter.limit)
    if run_filter.offset:
        query = query.offset(run_filter.offset)
    return list(conn.execute(query).mappings())


def queue_stats(conn: Connection, now: int) -> tuple[dict[str, int], int, int | None]:
    """Counts of pending and leased runs, how many of the leased ones have an expired lease at
    ``now``, and when the oldest pending run was created.

    Served from the (status, id) and (status, lease_expires_at) indexes and one row, so its cost
    does not grow with the number of finished runs.
    """
    counts = conn.execute(
        sa.select(runs.c.status, sa.func.count())
        .where(runs.c.status.in_(_SQL_ACTIVE))
        .group_by(runs.c.status)
    )
    expired = conn.execute(
        sa.select(sa.func.count()).where(
            runs.c.status == sql_status(RunStatus.LEASED), runs.c.lease_expires_at <= now
        )
    ).scalar()
    oldest = conn.execute(
        sa.select(runs.c.created_at)
        .where(runs.c.status == sql_status(RunStatus.PENDING))
        .order_by(runs.c.id)
        .limit(1)
    ).scalar()
    return {status: int(count) for status, count in counts}, int(expired or 0), oldest


def get_steps(conn: Connection, run_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            sa.select(*steps.c)
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.step_index, steps.c.id)
        ).mappings()
    )


def get_step_attempts(conn: Connection, run_id: str) -> list[RowMapping]:
    """A run's step attempts, oldest first, each with its run's status and lease generation.

    Oldest first is by lease generation, then step index: a lease starts its
    steps in index order, and a run is claimed again only once its earlier
    lease is over. (Ids say when a row was written, not when its step began.)
    The run's columns say whether a ``started`` attempt was left behind
    (see :class:`durably.models.StepAttempt`). An outer join: attempts are
    deleted with their run, and any that were not would show.
    """
    return list(
        conn.execute(
            sa.select(
                *step_attempts.c,
                runs.c.status.label("run_status"),
                runs.c.lease_generation.label("run_lease_generation"),
            )
            .outerjoin_from(step_attempts, runs, runs.c.id == step_attempts.c.run_id)
            .where(step_attempts.c.run_id == run_id)
            .order_by(step_attempts.c.lease_generation, step_attempts.c.step_index)
        ).mappings()
    )


def get_logs(conn: Connection, run_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            sa.select(*logs.c).where(logs.c.run_id == run_id).order_by(logs.c.id)
        ).mappings()
    )


# -- changing state from outside the lease -----------------------------------


_CANCEL = (
    runs.update()
    .where(runs.c.id == _RUN_ID, runs.c.status.in_(_SQL_ACTIVE))
    .values(
        status=sql_status(RunStatus.CANCELLED),
        **COUNTED_STEP_COUNTERS,
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        completed_at=_NOW,
        updated_at=_NOW,
    )
    .returning(*runs.c)
)

_RUN_IS = runs.alias("run_is")


def _run_is(status: RunStatus) -> Any:
    return sa.exists().where(_RUN_IS.c.id == _RUN_ID, _RUN_IS.c.status == sql_status(status))


def _waits_from(status: WaitStatus, to: WaitStatus, run_now: RunStatus, **values: Any) -> Any:
    """The run's waits in ``status`` move to ``to``, if the change before it in the batch landed
    (the run is ``run_now``)."""
    return (
        waits.update()
        .where(
            waits.c.run_id == _RUN_ID,
            waits.c.status == sa.literal_column(f"'{status.value}'"),
            _run_is(run_now),
        )
        .values(status=sa.literal_column(f"'{to.value}'"), **values)
    )


_CLOSE_WAITS = _waits_from(
    WaitStatus.PENDING, WaitStatus.CANCELLED, RunStatus.CANCELLED, resolved_at=_NOW
)
"""After ``_CANCEL``: its pending waits take no signal any more."""
_REOPEN_WAITS = _waits_from(
    WaitStatus.CANCELLED, WaitStatus.PENDING, RunStatus.PENDING, resolved_at=sa.null()
)
"""After ``_RETRY``: the waits its cancel closed are open again for the resumed run."""

_blocking = runs.alias("blocking")
_RETRY = (
    runs.update()
    .where(
        runs.c.id == _RUN_ID,
        runs.c.status.in_(_SQL_RETRYABLE),
        # At most one pending run per concurrency key: retry does not add a second.
        ~sa.exists().where(
            _blocking.c.job_name == runs.c.job_name,
            _blocking.c.concurrency_key == runs.c.concurrency_key,
            _blocking.c.status == sql_status(RunStatus.PENDING),
        ),
    )
    .values(
        status=sql_status(RunStatus.PENDING),
        error=sa.null(),
        output=sa.null(),
        completed_at=sa.null(),
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        recovery_count=0,  # a retry starts a fresh count towards max_recoveries
        attempt=1,  # and of attempts, for the job's retry policy
        run_at=_NOW,  # claimable now, in line after the runs already due
        updated_at=_NOW,
    )
    .returning(*runs.c)
)

_IS_TERMINAL = sa.exists().where(runs.c.id == _RUN_ID, runs.c.status.in_(_SQL_TERMINAL))
_DELETE_RUN = (
    waits.delete().where(waits.c.run_id == _RUN_ID, _IS_TERMINAL),
    step_attempts.delete().where(step_attempts.c.run_id == _RUN_ID, _IS_TERMINAL),
    steps.delete().where(steps.c.run_id == _RUN_ID, _IS_TERMINAL),
    logs.delete().where(logs.c.run_id == _RUN_ID, _IS_TERMINAL),
    run_labels.delete().where(run_labels.c.run_id == _RUN_ID, _IS_TERMINAL),
    (
        runs.delete()
        .where(runs.c.id == _RUN_ID, runs.c.status.in_(_SQL_TERMINAL))
        .returning(*runs.c)
    ),
)
"""Children first, each only while the run is terminal; the run's row last."""

_PURGEABLE = (
    sa.select(runs.c.id)
    .where(runs.c.status.in_(_SQL_TERMINAL), runs.c.completed_at < sa.bindparam("older_than"))
    .order_by(runs.c.completed_at, runs.c.id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
    .scalar_subquery()
)
_PURGE = (
    waits.delete().where(waits.c.run_id.in_(_PURGEABLE)),
    step_attempts.delete().where(step_attempts.c.run_id.in_(_PURGEABLE)),
    steps.delete().where(steps.c.run_id.in_(_PURGEABLE)),
    logs.delete().where(logs.c.run_id.in_(_PURGEABLE)),
    run_labels.delete().where(run_labels.c.run_id.in_(_PURGEABLE)),
    runs.delete().where(runs.c.id.in_(_PURGEABLE)),
)
"""The same oldest terminal runs in every statement: the ordering is total, and
deleting children does not change which runs qualify."""


def cancel_op(run_id: str, now: int) -> Operation[Mapping[str, Any]]:
    """Cancel a pending, leased or waiting run. A leased run's worker stops at its next step.

    Its pending waits are closed with it: a later signal is refused.
    """
    outcome: Outcome
    params = {"run_id": run_id, "now": now}
    outcome, _ = yield Write([(_CANCEL, params), (_CLOSE_WAITS, params)])
    if outcome.rows:
        return outcome.rows[0]
    row = yield Read(require_run, (run_id,))
    raise ConflictError(f"Cannot cancel {row['status']} run: {run_id}")


def retry_op(run_id: str, now: int) -> Operation[Mapping[str, Any]]:
    """Put a failed or cancelled run back to pending, keeping its completed steps.

    The next worker replays those steps from storage and resumes at the first
    one that did not complete.
    """
    outcome: Outcome
    params = {"run_id": run_id, "now": now}
    outcome, _ = yield Write([(_RETRY, params), (_REOPEN_WAITS, params)])
    if outcome.rows:
        return outcome.rows[0]
    row = yield Read(require_run, (run_id,))
    if RunStatus(row["status"]) not in RETRYABLE_STATUSES:
        raise ConflictError(f"Cannot retry {row['status']} run: {run_id}")
    raise ConflictError(
        f"Cannot retry run {run_id}: a pending run already exists for concurrency key "
        f'"{row["concurrency_key"]}" in job "{row["job_name"]}"'
    )


def delete_op(run_id: str) -> Operation[Mapping[str, Any]]:
    """Delete a terminal run with its steps, step attempts, logs and labels; returns its row."""
    params = {"run_id": run_id}
    outcomes: list[Outcome] = yield Write([(statement, params) for statement in _DELETE_RUN])
    if outcomes[-1].rows:
        return outcomes[-1].rows[0]
    row = yield Read(require_run, (run_id,))
    raise ConflictError(f"Cannot delete {row['status']} run: {run_id}")


def purge_op(older_than: int, limit: int) -> Operation[int]:
    """Delete up to ``limit`` terminal runs completed before ``older_than``, oldest first."""
    params = {"older_than": older_than, "limit": limit}
    outcomes: list[Outcome] = yield Write([(statement, params) for statement in _PURGE])
    return outcomes[-1].rowcount
