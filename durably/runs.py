"""Run rows outside a lease: creating, reading, cancelling, retrying, deleting, purging.

Reads take a SQLAlchemy ``Connection`` inside a transaction (see
:class:`durably.database.Database`). So does :func:`enqueue`, which also
runs on the caller's own connection (transactional enqueue).

The writes an application makes (a trigger with keys, cancel, retry,
delete, purge) take the :class:`Database` instead. Each is one prebuilt
statement batch through :meth:`Database.write_batch`, which checks and
changes in the same statements: one request to a remote server, so no write
lock is held across round trips and a process killed mid-way leaves no
transaction open. When a write changes nothing, a read afterwards says why
(unknown run, wrong status, a key taken). A trigger is an operation
(:func:`enqueue_op`, see :mod:`durably.operation`), so that the triggers of
the asyncio API travel with the event loop's other writes.

Operations done by the holder of a run's lease (claim, heartbeat, steps,
completion) live in :mod:`durably.leases`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.dml import UpdateBase

from .database import Batch, Database
from .errors import ConflictError, NotFoundError
from .ids import new_id, new_ids
from .operation import Call, Operation, Write
from .schema import COUNTED_STEP_COUNTERS, RUN_COLUMNS, logs, run_labels, runs, sql_status, steps
from .status import (
    ACTIVE_STATUSES,
    RETRYABLE_STATUSES,
    TERMINAL_STATUSES,
    Disposition,
    RunStatus,
    StepStatus,
)

_SQL_TERMINAL = [sql_status(s) for s in sorted(TERMINAL_STATUSES)]
_SQL_ACTIVE = [sql_status(s) for s in sorted(ACTIVE_STATUSES)]
_SQL_RETRYABLE = [sql_status(s) for s in sorted(RETRYABLE_STATUSES)]
_PENDING = RunStatus.PENDING.value
"""A new run's status; ``.value`` of an enum member is a Python property (0.3 µs a run)."""
_RUN_ID = sa.bindparam("run_id", type_=sa.String)
_NOW = sa.bindparam("now", type_=sa.BigInteger)


class EnqueueRequest(TypedDict):
    """A validated trigger: everything needed to insert one run row.

    A dict rather than a class, because a batch holds one per run for as
    long as it takes, and the garbage collector tracks every instance of a
    class but no dict whose values are strings, numbers or None. Tracked,
    the requests of a batch of 5,000 were half of what it moved into
    the collector's oldest generation, whose growth sets off the full
    collections of the process that made a batch slow (docs/performance.md,
    the nineteenth round). ``labels`` is None, not ``{}``, for a trigger
    without labels: a dict inside would be tracked, and so the request.
    """

    job_name: str
    input_json: str
    labels: Mapping[str, str] | None
    labels_json: str
    idempotency_key: str | None
    concurrency_key: str | None
    coalesce: bool


Enqueued = tuple[Sequence[Mapping[Any, Any]], Sequence[Disposition]]
"""What a trigger did: each run's row, and its disposition at the same index.

A created run's row is the columns the trigger wrote
(:meth:`~durably.models.Run.from_written` builds it), any other the stored
row it resolved to. Two lists rather than a (row, disposition) pair per run:
the runs of a batch then share one list of dispositions, and no pair lives
as long as the batch does (a pair holds a dict, so the garbage collector
tracks it). A plain tuple, as every trigger makes one: a ``NamedTuple`` is
built by a Python function, and with a strict ``zip`` over it cost a single
trigger 6,600 machine instructions more.
"""


def _created(rows: Sequence[Mapping[Any, Any]]) -> Enqueued:
    return rows, [Disposition.CREATED] * len(rows)


def _resolved(results: Sequence[tuple[Mapping[Any, Any], Disposition]]) -> Enqueued:
    return [row for row, _ in results], [disposition for _, disposition in results]


@dataclass(frozen=True)
class RunFilter:
    status: Sequence[str] = ()
    job_name: Sequence[str] = ()
    labels: Mapping[str, str] | None = None
    limit: int | None = None
    offset: int = 0


# -- creating ---------------------------------------------------------------


_WRITTEN = ("id", "job_name", "status", "input", "labels", "created_at", "updated_at")
"""The columns a trigger writes; the schema fills in the rest.

Binding a dozen NULLs and zeros as well cost a single trigger 5-9 µs of its
~130, and a batch 4 µs of its ~11 µs of SQL per run (measured with
``sqlite3`` on this schema). The :class:`~durably.models.Run` a trigger
returns is built from these columns (:meth:`~durably.models.Run.from_written`).
"""
_KEYS = ("idempotency_key", "concurrency_key")


def _insert_run(columns: Sequence[str]) -> SQLiteInsert:
    return sqlite_insert(runs).values({name: sa.bindparam(name) for name in columns})


_INSERT_RUN = _insert_run(_WRITTEN)
_INSERT_LABEL = run_labels.insert()
_INSERT_RUN_UNLESS_TAKEN = _insert_run(_WRITTEN + _KEYS).on_conflict_do_nothing()
"""A run with keys: not inserted when its idempotency key or pending
concurrency key is taken (the unique indexes decide, atomically)."""
_INSERT_LABEL_IF_INSERTED = run_labels.insert().from_select(
    ["run_id", "key", "value"],
    sa.select(
        _RUN_ID, sa.bindparam("key", type_=sa.String), sa.bindparam("value", type_=sa.Text)
    ).where(sa.exists().where(runs.c.id == _RUN_ID)),
)
_KEYED_ATTEMPTS = 5


def cannot_conflict(requests: Sequence[EnqueueRequest]) -> bool:
    """Runs without idempotency or concurrency keys match no existing row: a plain insert."""
    return not any(r["idempotency_key"] or r["concurrency_key"] for r in requests)


def new_runs(requests: Sequence[EnqueueRequest], now: int) -> tuple[list[dict[str, Any]], Batch]:
    """The columns written for new runs and the statements that insert them (and their labels).

    The rows are known before anything is written, so the statements can go
    to the database as one prebuilt batch (:meth:`Database.write_batch`: one
    request to a remote server, one ``executemany`` per table locally) and
    nothing is read back. A single run without labels is one plain statement,
    which SQLite runs as its own transaction: no ``BEGIN`` and ``COMMIT``.
    """
    rows = [
        _new_row(request, now, run_id)
        for request, run_id in zip(requests, new_ids(len(requests)), strict=True)
    ]
    labels = [
        label
        for request, row in zip(requests, rows, strict=True)
        if request["labels"]
        for label in _label_rows(row["id"], request)
    ]
    batch: list[tuple[UpdateBase, Any]] = [(_INSERT_RUN, rows[0] if len(rows) == 1 else rows)]
    if labels:
        batch.append((_INSERT_LABEL, labels))
    return rows, batch


def keyed_run(request: EnqueueRequest, now: int) -> tuple[dict[str, Any], Batch]:
    """The columns of a run with keys and the statements that insert it unless a key is taken."""
    row = _new_row(request, now, new_id())
    row["idempotency_key"] = request["idempotency_key"]
    row["concurrency_key"] = request["concurrency_key"]
    batch: list[tuple[UpdateBase, Any]] = [(_INSERT_RUN_UNLESS_TAKEN, row)]
    labels = _label_rows(row["id"], request)
    if labels:
        batch.append((_INSERT_LABEL_IF_INSERTED, labels))
    return row, batch


def enqueue(
    conn: Connection, request: EnqueueRequest, now: int
) -> tuple[Mapping[Any, Any], Disposition]:
    """Insert a run, or return the existing one the request resolves to (see :func:`taken_by`).

    Inside the caller's write transaction, so the run that took a key is
    still there when it is looked up.
    """
    row, batch = keyed_run(request, now)
    if conn.execute(*batch[0]).rowcount == 1:
        for statement, params in batch[1:]:
            conn.execute(statement, params)  # the labels
        return row, Disposition.CREATED
    taken = taken_by(conn, request)
    if taken is None:  # pragma: no cover - the write lock keeps the other run in place
        raise ConflictError(f"Run conflicts with an existing run of job {request['job_name']!r}")
    return taken


def enqueue_op(db: Database, requests: Sequence[EnqueueRequest], now: int) -> Operation[Enqueued]:
    """A trigger of ``requests`` as one write, for the sync API and for an event loop alike.

    Runs without keys are a prebuilt batch. From an event loop, the
    triggers its tasks make in the same turn (concurrent requests of an
    ASGI app) share one trip to the database and one transaction
    (:mod:`durably.loop_commit`); from threads, those made meanwhile share
    a commit (:mod:`durably.group_commit`).

    A single run with keys is inserted unless a key is taken, and the run
    that took it is read after the write, so no lock is held while anything
    is read. If that run is gone by then (the pending run of a concurrency
    key was claimed, a run was deleted), the insert is tried again. Several
    runs with keys are resolved in order in one write transaction: a later
    request may coalesce onto an earlier one.

    It returns each run's row with its disposition (:class:`Enqueued`).
    """
    if cannot_conflict(requests):
        rows, batch = new_runs(requests, now)
        yield Write(batch)
        return _created(rows)
    if len(requests) > 1:
        written: Enqueued = yield Call(db.write, (enqueue_many, requests, now))
        return written
    request = requests[0]
    row, batch = keyed_run(request, now)
    for _ in range(_KEYED_ATTEMPTS):
        outcomes = yield Write(batch)
        if outcomes[0].rowcount == 1:
            return _created([row])
        taken = yield Call(db.read, (taken_by, request))
        if taken is not None:
            return _resolved([taken])
    raise ConflictError(  # pragma: no cover - needs the key to change hands five times
        f"Run of job {request['job_name']!r} kept conflicting with runs that came and went"
    )


def taken_by(conn: Connection, request: EnqueueRequest) -> tuple[RowMapping, Disposition] | None:
    """The run a request with keys resolves to instead of a new one, or None if there is none.

    Precedence follows Durably: an idempotency key always wins (even over a
    concurrency conflict), then coalescing onto the pending run of the same
    concurrency key; without ``coalesce`` that pending run is a conflict.
    Uniqueness itself is enforced by the database indexes, so two processes
    racing on the same key cannot both insert.
    """
    if request["idempotency_key"] is not None:
        existing = _by_idempotency_key(conn, request["job_name"], request["idempotency_key"])
        if existing is not None:
            return existing, Disposition.IDEMPOTENT
    if request["concurrency_key"] is not None:
        pending = _pending_for_key(conn, request["job_name"], request["concurrency_key"])
        if pending is not None:
            if request["coalesce"]:
                return pending, Disposition.COALESCED
            raise ConflictError(
                f'A pending run already exists for concurrency key "{request["concurrency_key"]}" '
                f'in job "{request["job_name"]}". Use coalesce="skip" to return it instead.'
            )
    return None


def enqueue_many(conn: Connection, requests: Sequence[EnqueueRequest], now: int) -> Enqueued:
    """Enqueue in order on one connection; the caller's transaction makes it all-or-nothing."""
    if not cannot_conflict(requests):
        return _resolved([enqueue(conn, request, now) for request in requests])
    rows, batch = new_runs(requests, now)
    for statement, params in batch:
        conn.execute(statement, params)  # many rows: SQLAlchemy's executemany
    return _created(rows)


def _new_row(request: EnqueueRequest, now: int, run_id: str) -> dict[str, Any]:
    """The columns a trigger writes (``_WRITTEN``) for a new run."""
    return {
        "id": run_id,
        "job_name": request["job_name"],
        "status": _PENDING,
        "input": request["input_json"],
        "labels": request["labels_json"],
        "created_at": now,
        "updated_at": now,
    }


def _label_rows(run_id: str, request: EnqueueRequest) -> list[dict[str, str]]:
    labels = request["labels"]
    return (
        []
        if labels is None
        else [{"run_id": run_id, "key": k, "value": v} for k, v in labels.items()]
    )


def _by_idempotency_key(conn: Connection, job_name: str, key: str) -> RowMapping | None:
    return (
        conn.execute(
            sa.select(*RUN_COLUMNS).where(
                runs.c.job_name == job_name, runs.c.idempotency_key == key
            )
        )
        .mappings()
        .first()
    )


def _pending_for_key(conn: Connection, job_name: str, key: str) -> RowMapping | None:
    return (
        conn.execute(
            sa.select(*RUN_COLUMNS)
            .where(
                runs.c.job_name == job_name,
                runs.c.concurrency_key == key,
                runs.c.status == RunStatus.PENDING.value,
            )
            .order_by(runs.c.id)
            .limit(1)
        )
        .mappings()
        .first()
    )


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


def queue_stats(conn: Connection) -> tuple[dict[str, int], int | None]:
    """Counts of pending and leased runs, and when the oldest pending run was created.

    Served from the (status, id) index and one row, so its cost does not grow
    with the number of finished runs.
    """
    counts = conn.execute(
        sa.select(runs.c.status, sa.func.count())
        .where(runs.c.status.in_(_SQL_ACTIVE))
        .group_by(runs.c.status)
    )
    oldest = conn.execute(
        sa.select(runs.c.created_at)
        .where(runs.c.status == sql_status(RunStatus.PENDING))
        .order_by(runs.c.id)
        .limit(1)
    ).scalar()
    return {status: int(count) for status, count in counts}, oldest


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
        updated_at=_NOW,
    )
    .returning(*runs.c)
)

_IS_TERMINAL = sa.exists().where(runs.c.id == _RUN_ID, runs.c.status.in_(_SQL_TERMINAL))
_DELETE_RUN = (
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
    steps.delete().where(steps.c.run_id.in_(_PURGEABLE)),
    logs.delete().where(logs.c.run_id.in_(_PURGEABLE)),
    run_labels.delete().where(run_labels.c.run_id.in_(_PURGEABLE)),
    runs.delete().where(runs.c.id.in_(_PURGEABLE)),
)
"""The same oldest terminal runs in every statement: the ordering is total, and
deleting children does not change which runs qualify."""


def cancel(db: Database, run_id: str, now: int) -> Mapping[str, Any]:
    """Cancel a pending or leased run. A leased run's worker stops at its next step."""
    (outcome,) = db.write_batch([(_CANCEL, {"run_id": run_id, "now": now})])
    if outcome.rows:
        return outcome.rows[0]
    row = db.read(require_run, run_id)
    raise ConflictError(f"Cannot cancel {row['status']} run: {run_id}")


def retry(db: Database, run_id: str, now: int) -> Mapping[str, Any]:
    """Put a failed or cancelled run back to pending, keeping its completed steps.

    The next worker replays those steps from storage and resumes at the first
    one that did not complete.
    """
    (outcome,) = db.write_batch([(_RETRY, {"run_id": run_id, "now": now})])
    if outcome.rows:
        return outcome.rows[0]
    row = db.read(require_run, run_id)
    if RunStatus(row["status"]) not in RETRYABLE_STATUSES:
        raise ConflictError(f"Cannot retry {row['status']} run: {run_id}")
    raise ConflictError(
        f"Cannot retry run {run_id}: a pending run already exists for concurrency key "
        f'"{row["concurrency_key"]}" in job "{row["job_name"]}"'
    )


def delete_run(db: Database, run_id: str) -> Mapping[str, Any]:
    """Delete a terminal run with its steps, logs and labels; returns the deleted row."""
    params = {"run_id": run_id}
    outcomes = db.write_batch([(statement, params) for statement in _DELETE_RUN])
    if outcomes[-1].rows:
        return outcomes[-1].rows[0]
    row = db.read(require_run, run_id)
    raise ConflictError(f"Cannot delete {row['status']} run: {run_id}")


def purge(db: Database, older_than: int, limit: int) -> int:
    """Delete up to ``limit`` terminal runs completed before ``older_than``, oldest first."""
    params = {"older_than": older_than, "limit": limit}
    outcomes = db.write_batch([(statement, params) for statement in _PURGE])
    return outcomes[-1].rowcount
