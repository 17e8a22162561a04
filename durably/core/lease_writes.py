"""The writes a lease holder makes: step results, progress, logs, renewal, the run's end.

Each statement is built once and carries the fence (:data:`~durably.core.leases.FENCE`)
as parameters, so a write of a worker that lost its lease matches no row.
Each write is an operation (:mod:`durably.core.operation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import UpdateBase

from ..schema import COUNTED_STEP_COUNTERS, logs, runs, sql_status, steps, workers
from ..status import RunStatus, StepStatus
from . import attempts
from .leases import FENCE, NOW, AbortReason, Lease, fence
from .operation import Operation, Read, Write

_ENDED = (RunStatus.COMPLETED.value, RunStatus.FAILED.value, RunStatus.WAITING.value)


def _fenced_insert(table: sa.Table, values: dict[str, Any]) -> sa.Insert:
    """``INSERT … SELECT <values> WHERE EXISTS (<the fence>)``: a row only the lease holder adds."""
    return table.insert().from_select(
        list(values), sa.select(*values.values()).where(sa.exists().where(FENCE))
    )


INSERT_STEP = _fenced_insert(
    steps,
    {
        "run_id": sa.bindparam("fence_run", type_=sa.String),
        "name": sa.bindparam("step_name", type_=sa.String),
        "step_index": sa.bindparam("step_index", type_=sa.Integer),
        "status": sa.bindparam("step_status", type_=sa.String),
        "output": sa.bindparam("step_output", type_=sa.Text),
        "error": sa.bindparam("step_error", type_=sa.Text),
        "lease_generation": sa.bindparam("fence_generation", type_=sa.Integer),
        "started_at": sa.bindparam("step_started", type_=sa.BigInteger),
        "completed_at": NOW,
    },
)
"""A step row, inserted only if the lease still holds (INSERT … SELECT … WHERE EXISTS)."""

_SET_PROGRESS = (
    runs.update()
    .where(FENCE)
    .values(progress=sa.bindparam("run_progress", type_=sa.Text), updated_at=NOW)
)
_INSERT_LOG = _fenced_insert(
    logs,
    {
        "run_id": sa.bindparam("fence_run", type_=sa.String),
        "step_name": sa.bindparam("step_name", type_=sa.String),
        "level": sa.bindparam("level", type_=sa.String),
        "message": sa.bindparam("message", type_=sa.Text),
        "data": sa.bindparam("data", type_=sa.Text),
        "created_at": NOW,
    },
)
"""A log line, inserted only if the lease still holds: a stale worker's lines are dropped."""


def _ended_as(status: RunStatus, **values: Any) -> sa.Update:
    """The fenced update that ends a run: its step counters stored, its lease cleared."""
    return (
        runs.update()
        .where(FENCE)
        .values(
            status=sql_status(status),
            **COUNTED_STEP_COUNTERS,
            **values,
            lease_owner=sa.null(),
            lease_expires_at=sa.null(),
            completed_at=NOW,
            updated_at=NOW,
        )
    )


_COMPLETE_RUN = _ended_as(
    RunStatus.COMPLETED, output=sa.bindparam("run_output", type_=sa.Text), error=sa.null()
)
_FAIL_RUN = _ended_as(RunStatus.FAILED, error=sa.bindparam("run_error", type_=sa.Text))
_COMPLETED_BY_US = sa.exists().where(
    runs.c.id == sa.bindparam("fence_run", type_=sa.String),
    runs.c.status == sql_status(RunStatus.COMPLETED),
    runs.c.lease_generation == sa.bindparam("fence_generation", type_=sa.Integer),
)
"""After ``_COMPLETE_RUN`` in the same transaction: true only if that completion was ours."""
_DELETE_STEPS = steps.delete().where(
    steps.c.run_id == sa.bindparam("fence_run", type_=sa.String), _COMPLETED_BY_US
)
_DELETE_LOGS = logs.delete().where(
    logs.c.run_id == sa.bindparam("fence_run", type_=sa.String), _COMPLETED_BY_US
)
_SAME_KEY = runs.alias("same_key")
_CAN_WAIT_AS_PENDING = sa.or_(
    runs.c.concurrency_key.is_(None),
    ~sa.exists().where(
        _SAME_KEY.c.job_name == runs.c.job_name,
        _SAME_KEY.c.concurrency_key == runs.c.concurrency_key,
        _SAME_KEY.c.status == sql_status(RunStatus.PENDING),
    ),
)
"""The run may be pending again: no other pending run of its job has its concurrency key."""


def _waiting_until(claimable_at: Any) -> dict[str, Any]:
    """The values that let go of a run until ``claimable_at``: it holds no lease from then.

    It is pending again; beside a pending run of its concurrency key (which
    may not have a second) it stays ``leased`` with its lease expiring at
    ``claimable_at`` instead, which makes it just as claimable then (the
    claim's expired-lease arm).
    """
    return {
        "status": sa.case(
            (_CAN_WAIT_AS_PENDING, sql_status(RunStatus.PENDING)), else_=runs.c.status
        ),
        "lease_expires_at": sa.case((_CAN_WAIT_AS_PENDING, sa.null()), else_=claimable_at),
        "lease_owner": sa.null(),
    }


_RELEASE = runs.update().where(FENCE).values(**_waiting_until(NOW), updated_at=NOW)
"""The run is pending again (or, beside a pending run of its key, its lease expires now).

Either way any worker may claim it at once, in its place in the queue, and
no recovery is counted: ``lease_owner`` is cleared (see ``WAS_ABANDONED``)."""
_RUN_AT = sa.bindparam("run_at", type_=sa.BigInteger)
_SCHEDULE_RETRY = (
    runs.update()
    .where(FENCE)
    .values(
        **_waiting_until(_RUN_AT),
        run_at=_RUN_AT,
        attempt=runs.c.attempt + 1,
        error=sa.bindparam("run_error", type_=sa.Text),
        updated_at=NOW,
    )
)
"""The run waits for its next attempt until ``run_at``, holding no lease (``_waiting_until``).

``error`` keeps the failure that caused the retry, for whoever looks meanwhile."""
_TOUCH_WORKER = (
    workers.update()
    .where(workers.c.id == sa.bindparam("worker_id", type_=sa.String))
    .values(last_heartbeat_at=NOW)
)
_RENEW = (
    runs.update()
    .where(FENCE)
    .values(lease_expires_at=sa.bindparam("expires", type_=sa.BigInteger), updated_at=NOW)
)
"""The lease lasts longer, if its holder still holds it.

A lease that expired but that nobody claimed since (the generation is
unchanged: a claim increments it) is renewed too: a renewal the database
kept waiting for its lock must not throw away the run's work."""


def persist_step_op(
    lease: Lease,
    now: int,
    *,
    name: str,
    index: int,
    status: StepStatus,
    output_json: str | None,
    error: str | None,
    started_at: int,
    run_attempt: int,
    traceback: str | None = None,
) -> Operation[bool]:
    """Record one step execution, and its attempt; False when the lease is no longer ours.

    The run's step counters are counted from these rows when it is read
    (``schema.RUN_COLUMNS``): the run's own row is not written here.
    """
    row = {
        **fence(lease, now),
        "step_name": name,
        "step_index": index,
        "step_status": status.value,
        "step_output": output_json,
        "step_error": error,
        "step_started": started_at,
    }
    attempt = {
        **row,
        "run_attempt": run_attempt,
        "attempt_status": attempts.ENDED_AS[status],
        "attempt_traceback": traceback,
    }
    batch: list[tuple[UpdateBase, dict[str, Any]]] = [
        (INSERT_STEP, row),
        (attempts.ENDED, attempt),
    ]
    outcomes = yield Write(batch)
    return bool(outcomes[0].rowcount == 1)


def set_progress_op(lease: Lease, now: int, progress_json: str | None) -> Operation[bool]:
    params = {**fence(lease, now), "run_progress": progress_json}
    (outcome,) = yield Write([(_SET_PROGRESS, params)])
    return bool(outcome.rowcount == 1)


def append_log_op(
    lease: Lease,
    now: int,
    *,
    step_name: str | None,
    level: str,
    message: str,
    data_json: str | None,
) -> Operation[bool]:
    """Store one log line of the run (fenced); False when the lease is no longer ours."""
    params = {
        **fence(lease, now),
        "step_name": step_name,
        "level": level,
        "message": message,
        "data": data_json,
    }
    (outcome,) = yield Write([(_INSERT_LOG, params)])
    return bool(outcome.rowcount == 1)


def complete_op(
    lease: Lease, now: int, output_json: str | None, *, keep_steps: bool
) -> Operation[bool]:
    """Mark the run completed (fenced); drop its steps and logs unless ``keep_steps``.

    The deletes only match if the completion in front of them was ours.
    """
    params = fence(lease, now)
    batch: list[tuple[UpdateBase, dict[str, Any]]] = [
        (_COMPLETE_RUN, {**params, "run_output": output_json})
    ]
    if not keep_steps:
        batch += [(_DELETE_STEPS, params), (_DELETE_LOGS, params)]
    outcomes = yield Write(batch)
    return bool(outcomes[0].rowcount == 1)


def fail_op(lease: Lease, now: int, error: str) -> Operation[tuple[bool, str | None]]:
    """Mark the run failed (fenced). Steps are kept so ``retry`` can resume it.

    Returns whether the write was accepted and the name of the failed step.
    """
    (outcome,) = yield Write([(_FAIL_RUN, {**fence(lease, now), "run_error": error})])
    if outcome.rowcount != 1:
        return False, None
    failed_step: str | None = yield Read(failed_step_name, (lease.run_id,))
    return True, failed_step


def schedule_retry_op(lease: Lease, now: int, error: str, run_at: int) -> Operation[bool]:
    """End this attempt of the run: it is retried at ``run_at`` (fenced)."""
    params = {**fence(lease, now), "run_error": error, "run_at": run_at}
    (outcome,) = yield Write([(_SCHEDULE_RETRY, params)])
    return bool(outcome.rowcount == 1)


def release_op(lease: Lease, now: int) -> Operation[bool]:
    """Hand a run back early (interrupted, shutting down): it is claimable now, and shows so.

    A step still running is recorded as started first: it reads ``interrupted``.
    """
    batch = attempts.started_rows(lease, lease.unrecorded_steps())
    batch.append((_RELEASE, fence(lease, now)))
    outcomes = yield Write(batch)
    return bool(outcomes[-1].rowcount == 1)


def renew_op(
    worker_ids: Sequence[str], leases: Sequence[Lease], now: int, expires: int
) -> Operation[tuple[list[Lease], list[tuple[Lease, str]]]]:
    """Renew every lease held, mark the workers alive, and record the steps running, in one transaction.

    Returns the leases renewed and the leases lost, each with its
    :class:`~durably.core.leases.AbortReason`. A step recorded here is
    marked so that the next heartbeat does not write it again.
    """
    batch: list[tuple[UpdateBase, dict[str, Any]]] = [
        (_TOUCH_WORKER, {"worker_id": worker_id, "now": now}) for worker_id in worker_ids
    ]
    batch += [(_RENEW, {**fence(lease, now), "expires": expires}) for lease in leases]
    running = [(lease, lease.unrecorded_steps()) for lease in leases]
    for lease, steps_running in running:
        batch += attempts.started_rows(lease, steps_running)
    written = (yield Write(batch)) if batch else []
    outcomes = written[len(worker_ids) : len(worker_ids) + len(leases)]
    for _lease, steps_running in running:
        for step in steps_running:
            step.recorded = True
    renewed = [lease for lease, o in zip(leases, outcomes, strict=True) if o.rowcount == 1]
    refused = [lease for lease, o in zip(leases, outcomes, strict=True) if o.rowcount != 1]
    lost: list[tuple[Lease, str]] = (yield Read(_why_not_renewed, (refused,))) if refused else []
    return renewed, lost


def run_status_op(run_id: str) -> Operation[str | None]:
    status: str | None = yield Read(run_status, (run_id,))
    return status


def run_status(conn: Connection, run_id: str) -> str | None:
    return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()


def failed_step_name(conn: Connection, run_id: str) -> str | None:
    return conn.execute(
        sa.select(steps.c.name)
        .where(steps.c.run_id == run_id, steps.c.status == StepStatus.FAILED.value)
        .order_by(steps.c.id.desc())
        .limit(1)
    ).scalar()


def _why_not_renewed(conn: Connection, refused: Sequence[Lease]) -> list[tuple[Lease, str]]:
    """Why each of these leases could not be renewed; a lease that ended its own run lost nothing."""
    lost: list[tuple[Lease, str]] = []
    for lease in refused:
        current = conn.execute(
            sa.select(runs.c.status, runs.c.lease_generation).where(runs.c.id == lease.run_id)
        ).first()
        if current is None:
            lost.append((lease, AbortReason.LEASE_LOST))
        elif current.status == RunStatus.CANCELLED.value:
            lost.append((lease, AbortReason.CANCELLED))
        elif current.lease_generation == lease.generation and current.status in _ENDED:
            pass  # this lease itself just ended (or suspended) the run: nothing lost
        else:
            lost.append((lease, AbortReason.LEASE_LOST))
    return lost


_FENCE_OFF = (
    runs.update()
    .where(FENCE)
    .values(
        lease_generation=runs.c.lease_generation + 1,
        lease_expires_at=sa.bindparam("expires", type_=sa.BigInteger),
        updated_at=NOW,
    )
)
"""The run's next generation, still leased by the same worker: the old one's writes match no row."""


def fence_off_op(lease: Lease, now: int, expires: int) -> Operation[bool]:
    """Shut out every later write of ``lease`` (fenced); False when it was no longer ours.

    For an attempt whose code cannot be stopped (a ``def`` job past its
    timeout): the run stays leased, at the next generation, so the worker
    can record how the attempt ended while the attempt's late writes fail.
    The steps it was running are recorded as started first, under its own
    generation: they read ``interrupted``.
    """
    batch = attempts.started_rows(lease, lease.unrecorded_steps())
    batch.append((_FENCE_OFF, {**fence(lease, now), "expires": expires}))
    outcomes = yield Write(batch)
    return bool(outcomes[-1].rowcount == 1)
