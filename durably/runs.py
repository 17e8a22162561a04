"""Run rows outside a lease: creating, reading, cancelling, retrying, deleting, purging.

Each function takes a SQLAlchemy ``Connection`` that is already inside a
transaction (see :class:`durably.database.Database`) or the caller's own
connection (transactional enqueue). Operations done by the holder of a
run's lease (claim, heartbeat, steps, completion) live in
:mod:`durably.leases`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.dml import UpdateBase

from .database import Batch, unique_violation
from .errors import ConflictError, NotFoundError
from .ids import new_id
from .schema import logs, run_labels, runs, steps
from .status import TERMINAL_STATUSES, Disposition, RunStatus, StepStatus

_TERMINAL = [s.value for s in TERMINAL_STATUSES]
_ACTIVE = [RunStatus.PENDING.value, RunStatus.LEASED.value]


@dataclass(frozen=True)
class EnqueueRequest:
    """A validated trigger: everything needed to insert one run row."""

    job_name: str
    input_json: str
    labels: Mapping[str, str]
    labels_json: str
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    coalesce: bool = False


@dataclass(frozen=True)
class RunFilter:
    status: Sequence[str] = ()
    job_name: Sequence[str] = ()
    labels: Mapping[str, str] | None = None
    limit: int | None = None
    offset: int = 0


# -- creating ---------------------------------------------------------------


_INSERT_RUN = runs.insert()
_INSERT_LABEL = run_labels.insert()


def cannot_conflict(requests: Sequence[EnqueueRequest]) -> bool:
    """Runs without idempotency or concurrency keys match no existing row: a plain insert."""
    return not any(r.idempotency_key or r.concurrency_key for r in requests)


def new_runs(requests: Sequence[EnqueueRequest], now: int) -> tuple[list[dict[str, Any]], Batch]:
    """The rows of new runs and the statements that insert them (and their labels).

    The rows are known before anything is written, so the statements can go
    to the database as one prebuilt batch (:meth:`Database.write_batch`: one
    request to a remote server, one ``executemany`` per table locally) and
    nothing is read back.
    """
    rows = [_new_row(request, now) for request in requests]
    labels = [
        label
        for request, row in zip(requests, rows, strict=True)
        for label in _label_rows(row["id"], request)
    ]
    batch: list[tuple[UpdateBase, list[dict[str, Any]]]] = [(_INSERT_RUN, rows)]
    if labels:
        batch.append((_INSERT_LABEL, labels))
    return rows, batch


def enqueue(
    conn: Connection, request: EnqueueRequest, now: int
) -> tuple[Mapping[Any, Any], Disposition]:
    """Insert a run, or return the existing one the request resolves to.

    Precedence follows Durably: an idempotency key always wins (even over a
    concurrency conflict), then coalescing onto the pending run of the same
    concurrency key, then a new row. Uniqueness is enforced by the database
    indexes, so two processes racing on the same key cannot both insert.
    """
    if request.idempotency_key is not None:
        existing = _by_idempotency_key(conn, request.job_name, request.idempotency_key)
        if existing is not None:
            return existing, Disposition.IDEMPOTENT
    if request.coalesce and request.concurrency_key is not None:
        pending = _pending_for_key(conn, request.job_name, request.concurrency_key)
        if pending is not None:
            return pending, Disposition.COALESCED

    (row,), batch = new_runs([request], now)
    try:
        conn.execute(*batch[0])
    except Exception as exc:
        violation = unique_violation(exc)
        if violation is None:
            raise
        return _resolve_conflict(conn, request, violation.columns)
    for statement, params in batch[1:]:
        conn.execute(statement, params)  # the labels
    return row, Disposition.CREATED


def _resolve_conflict(
    conn: Connection, request: EnqueueRequest, columns: tuple[str, ...]
) -> tuple[RowMapping, Disposition]:
    # Another transaction inserted between our check and our insert. The
    # idempotency key is re-checked first: one insert can violate both
    # indexes and SQLite reports only one of them.
    if request.idempotency_key is not None:
        existing = _by_idempotency_key(conn, request.job_name, request.idempotency_key)
        if existing is not None:
            return existing, Disposition.IDEMPOTENT
    if request.concurrency_key is not None and any("concurrency_key" in c for c in columns):
        if request.coalesce:
            pending = _pending_for_key(conn, request.job_name, request.concurrency_key)
            if pending is not None:
                return pending, Disposition.COALESCED
        raise ConflictError(
            f'A pending run already exists for concurrency key "{request.concurrency_key}" '
            f'in job "{request.job_name}". Use coalesce="skip" to return it instead.'
        )
    raise ConflictError(f"Run conflicts with an existing run ({', '.join(columns)})")


def enqueue_many(
    conn: Connection, requests: Sequence[EnqueueRequest], now: int
) -> list[tuple[Mapping[Any, Any], Disposition]]:
    """Enqueue in order on one connection; the caller's transaction makes it all-or-nothing."""
    if not cannot_conflict(requests):
        return [enqueue(conn, request, now) for request in requests]
    rows, batch = new_runs(requests, now)
    for statement, params in batch:
        conn.execute(statement, params)  # many rows: SQLAlchemy's executemany
    return [(row, Disposition.CREATED) for row in rows]


def _new_row(request: EnqueueRequest, now: int) -> dict[str, Any]:
    """Every column of a new run: the row as it will be stored."""
    return {
        "id": new_id(),
        "job_name": request.job_name,
        "status": RunStatus.PENDING.value,
        "input": request.input_json,
        "labels": request.labels_json,
        "idempotency_key": request.idempotency_key,
        "concurrency_key": request.concurrency_key,
        "output": None,
        "error": None,
        "progress": None,
        "current_step_index": 0,
        "completed_step_count": 0,
        "lease_owner": None,
        "lease_expires_at": None,
        "lease_generation": 0,
        "started_at": None,
        "completed_at": None,
        "created_at": now,
        "updated_at": now,
    }


def _label_rows(run_id: str, request: EnqueueRequest) -> list[dict[str, str]]:
    return [{"run_id": run_id, "key": k, "value": v} for k, v in request.labels.items()]


def _by_idempotency_key(conn: Connection, job_name: str, key: str) -> RowMapping | None:
    return (
        conn.execute(
            sa.select(*runs.c).where(runs.c.job_name == job_name, runs.c.idempotency_key == key)
        )
        .mappings()
        .first()
    )


def _pending_for_key(conn: Connection, job_name: str, key: str) -> RowMapping | None:
    return (
        conn.execute(
            sa.select(*runs.c)
            .where(
                runs.c.job_name == job_name,
                runs.c.concurrency_key == key,
                runs.c.status == RunStatus.PENDING.value,
            )
            .order_by(runs.c.created_at, runs.c.id)
            .limit(1)
        )
        .mappings()
        .first()
    )


# -- reading ----------------------------------------------------------------


def get_run(conn: Connection, run_id: str) -> RowMapping | None:
    return conn.execute(sa.select(*runs.c).where(runs.c.id == run_id)).mappings().first()


def require_run(conn: Connection, run_id: str) -> RowMapping:
    row = get_run(conn, run_id)
    if row is None:
        raise NotFoundError(f"Run not found: {run_id}")
    return row


def list_runs(conn: Connection, run_filter: RunFilter) -> list[RowMapping]:
    """Runs newest first; ``id`` breaks ties so pages never overlap."""
    query = sa.select(*runs.c)
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
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc())
    if run_filter.limit is not None:
        query = query.limit(run_filter.limit)
    if run_filter.offset:
        query = query.offset(run_filter.offset)
    return list(conn.execute(query).mappings())


def queue_stats(conn: Connection) -> dict[str, tuple[int, int | None]]:
    """``{status: (count, oldest created_at)}`` for pending and leased runs.

    Served from the (status, created_at) index alone, so its cost does not
    grow with the number of finished runs.
    """
    rows = conn.execute(
        sa.select(runs.c.status, sa.func.count(), sa.func.min(runs.c.created_at))
        .where(runs.c.status.in_(_ACTIVE))
        .group_by(runs.c.status)
    )
    return {status: (int(count), oldest) for status, count, oldest in rows}


def get_steps(conn: Connection, run_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            sa.select(*steps.c)
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.step_index, steps.c.id)
        ).mappings()
    )


def get_logs(conn: Connection, run_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            sa.select(*logs.c).where(logs.c.run_id == run_id).order_by(logs.c.id)
        ).mappings()
    )


def failed_step_name(conn: Connection, run_id: str) -> str | None:
    return conn.execute(
        sa.select(steps.c.name)
        .where(steps.c.run_id == run_id, steps.c.status == StepStatus.FAILED.value)
        .order_by(steps.c.id.desc())
        .limit(1)
    ).scalar()


# -- changing state from outside the lease -----------------------------------


def cancel(conn: Connection, run_id: str, now: int) -> RowMapping:
    """Cancel a pending or leased run. A leased run's worker stops at its next step."""
    row = require_run(conn, run_id)
    if row["status"] not in _ACTIVE:
        raise ConflictError(f"Cannot cancel {row['status']} run: {run_id}")
    updated = (
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id, runs.c.status.in_(_ACTIVE))
            .values(
                status=RunStatus.CANCELLED.value,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=now,
                updated_at=now,
            )
            .returning(*runs.c)
        )
        .mappings()
        .first()
    )
    if updated is None:  # pragma: no cover - the write lock makes this unreachable on SQLite
        current = require_run(conn, run_id)
        raise ConflictError(f"Cannot cancel run {run_id}: status changed to {current['status']}")
    return updated


def retry(conn: Connection, run_id: str, now: int) -> RowMapping:
    """Put a failed or cancelled run back to pending, keeping its completed steps.

    The next worker replays those steps from storage and resumes at the first
    one that did not complete.
    """
    row = require_run(conn, run_id)
    if row["status"] not in (RunStatus.FAILED.value, RunStatus.CANCELLED.value):
        raise ConflictError(f"Cannot retry {row['status']} run: {run_id}")
    try:
        return (
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status=RunStatus.PENDING.value,
                    error=None,
                    output=None,
                    completed_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
                .returning(*runs.c)
            )
            .mappings()
            .one()
        )
    except Exception as exc:
        if unique_violation(exc) is None:
            raise
        raise ConflictError(
            f"Cannot retry run {run_id}: a pending run already exists for concurrency key "
            f'"{row["concurrency_key"]}" in job "{row["job_name"]}"'
        ) from None


def delete_run(conn: Connection, run_id: str) -> RowMapping:
    """Delete a terminal run with its steps, logs and labels."""
    row = require_run(conn, run_id)
    if row["status"] not in _TERMINAL:
        raise ConflictError(f"Cannot delete {row['status']} run: {run_id}")
    _delete_cascade(conn, [run_id])
    return row


def _delete_cascade(conn: Connection, run_ids: Iterable[str]) -> None:
    ids = list(run_ids)
    if not ids:
        return
    conn.execute(steps.delete().where(steps.c.run_id.in_(ids)))
    conn.execute(logs.delete().where(logs.c.run_id.in_(ids)))
    conn.execute(run_labels.delete().where(run_labels.c.run_id.in_(ids)))
    conn.execute(runs.delete().where(runs.c.id.in_(ids)))


def purge(conn: Connection, older_than: int, limit: int) -> int:
    """Delete up to ``limit`` terminal runs completed before ``older_than``, oldest first."""
    ids = list(
        conn.execute(
            sa.select(runs.c.id)
            .where(runs.c.status.in_(_TERMINAL), runs.c.completed_at < older_than)
            .order_by(runs.c.completed_at, runs.c.id)
            .limit(limit)
        ).scalars()
    )
    _delete_cascade(conn, ids)
    return len(ids)
