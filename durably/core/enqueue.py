"""How a run is created: triggers, with or without idempotency and concurrency keys.

A trigger without keys is a prebuilt batch (:func:`new_runs`): the rows are
known before anything is written, so nothing is read back. A trigger with
keys is inserted unless a key is taken (the unique indexes decide,
atomically), and the run that took it is read afterwards (:func:`taken_by`).
:func:`enqueue_op` is the trigger as an operation, for the sync API and an
event loop alike; :func:`enqueue_many` runs on the caller's own connection
(transactional enqueue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.dml import UpdateBase

from ..errors import ConflictError
from ..ids import new_id, new_ids
from ..schema import RUN_COLUMNS, run_labels, runs
from ..status import Disposition, RunStatus
from ..storage.statements import Batch
from .operation import Operation, Read, Transaction, Write

_PENDING = RunStatus.PENDING.value
_RUN_ID = sa.bindparam("run_id", type_=sa.String)


class EnqueueRequest(TypedDict):
    """A validated trigger: everything needed to insert one run row.

    A dict of plain values rather than a class instance: a batch trigger
    holds one per run while it is written, and the garbage collector does not
    track a dict that holds only strings, numbers and None (so ``labels`` is
    None, not ``{}``, for a trigger without labels). See the contributor
    notes on batch triggers for why that matters.
    """

    job_name: str
    input_json: str
    labels: Mapping[str, str] | None
    labels_json: str
    idempotency_key: str | None
    concurrency_key: str | None
    coalesce: bool
    queue: str
    priority: int
    run_at: int | None
    """When the run becomes claimable (ms since the epoch); None: ``delay_ms`` after the trigger."""
    delay_ms: int


Enqueued = tuple[Sequence[Mapping[Any, Any]], Sequence[Disposition]]
"""What a trigger did: each run's row, and its disposition at the same index.

A created run's row is the columns the trigger wrote
(:meth:`~durably.models.Run.from_written` builds it), any other the stored
row it resolved to. Two lists rather than a pair per run, so that the runs
of a batch share one list of dispositions.
"""


def _created(rows: Sequence[Mapping[Any, Any]]) -> Enqueued:
    return rows, [Disposition.CREATED] * len(rows)


def _resolved(results: Sequence[tuple[Mapping[Any, Any], Disposition]]) -> Enqueued:
    return [row for row, _ in results], [disposition for _, disposition in results]


_WRITTEN = (
    "id",
    "job_name",
    "status",
    "input",
    "labels",
    "queue",
    "priority",
    "run_at",
    "created_at",
    "updated_at",
)
"""The columns a trigger writes; the schema's defaults fill in the rest (binding a dozen
NULLs and zeros as well costs a trigger a good part of its SQL). The
:class:`~durably.models.Run` a trigger returns is built from these columns
(:meth:`~durably.models.Run.from_written`)."""
_KEYS = ("idempotency_key", "concurrency_key")
_TRACED = ("trace_context",)
"""Written only by a trigger that carries a trace context (an instrumented instance)."""


def _insert_run(columns: Sequence[str]) -> SQLiteInsert:
    return sqlite_insert(runs).values({name: sa.bindparam(name) for name in columns})


_INSERT_RUN = _insert_run(_WRITTEN)
_INSERT_TRACED_RUN = _insert_run(_WRITTEN + _TRACED)
_INSERT_LABEL = run_labels.insert()
_INSERT_RUN_UNLESS_TAKEN = _insert_run(_WRITTEN + _KEYS).on_conflict_do_nothing()
"""A run with keys: not inserted when its idempotency key or pending
concurrency key is taken (the unique indexes decide, atomically)."""
_INSERT_TRACED_RUN_UNLESS_TAKEN = _insert_run(_WRITTEN + _KEYS + _TRACED).on_conflict_do_nothing()
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


def new_runs(
    requests: Sequence[EnqueueRequest], now: int, trace_context: str | None = None
) -> tuple[list[dict[str, Any]], Batch]:
    """The columns written for new runs and the statements that insert them (and their labels).

    The rows are known before anything is written, so the statements can go
    to the database as one prebuilt batch (:meth:`~durably.storage.Database.write_batch`: one
    request to a remote server, one ``executemany`` per table locally) and
    nothing is read back. A single run without labels is one plain statement,
    which SQLite runs as its own transaction: no ``BEGIN`` and ``COMMIT``.

    ``trace_context`` (see :func:`enqueue_op`) is stored with every run.
    """
    rows = [
        _new_row(request, now, run_id)
        for request, run_id in zip(requests, new_ids(len(requests)), strict=True)
    ]
    insert = _INSERT_RUN
    if trace_context is not None:
        insert = _INSERT_TRACED_RUN
        for row in rows:
            row["trace_context"] = trace_context
    labels = [
        label
        for request, row in zip(requests, rows, strict=True)
        if request["labels"]
        for label in _label_rows(row["id"], request)
    ]
    batch: list[tuple[UpdateBase, Any]] = [(insert, rows[0] if len(rows) == 1 else rows)]
    if labels:
        batch.append((_INSERT_LABEL, labels))
    return rows, batch


def keyed_run(
    request: EnqueueRequest, now: int, trace_context: str | None = None
) -> tuple[dict[str, Any], Batch]:
    """The columns of a run with keys and the statements that insert it unless a key is taken."""
    row = _new_row(request, now, new_id())
    row["idempotency_key"] = request["idempotency_key"]
    row["concurrency_key"] = request["concurrency_key"]
    insert = _INSERT_RUN_UNLESS_TAKEN
    if trace_context is not None:
        insert = _INSERT_TRACED_RUN_UNLESS_TAKEN
        row["trace_context"] = trace_context
    batch: list[tuple[UpdateBase, Any]] = [(insert, row)]
    labels = _label_rows(row["id"], request)
    if labels:
        batch.append((_INSERT_LABEL_IF_INSERTED, labels))
    return row, batch


def enqueue(
    conn: Connection, request: EnqueueRequest, now: int, trace_context: str | None = None
) -> tuple[Mapping[Any, Any], Disposition]:
    """Insert a run, or return the existing one the request resolves to (see :func:`taken_by`).

    Inside the caller's write transaction, so the run that took a key is
    still there when it is looked up.
    """
    row, batch = keyed_run(request, now, trace_context)
    if conn.execute(*batch[0]).rowcount == 1:
        for statement, params in batch[1:]:
            conn.execute(statement, params)  # the labels
        return row, Disposition.CREATED
    taken = taken_by(conn, request)
    if taken is None:  # pragma: no cover - the write lock keeps the other run in place
        raise ConflictError(f"Run conflicts with an existing run of job {request['job_name']!r}")
    return taken


def enqueue_op(
    requests: Sequence[EnqueueRequest], now: int, trace_context: str | None = None
) -> Operation[Enqueued]:
    """A trigger of ``requests`` as one write, for the sync API and for an event loop alike.

    Runs without keys are a prebuilt batch. From an event loop, the
    triggers its tasks make in the same turn (concurrent requests of an
    ASGI app) share one trip to the database and one transaction
    (:mod:`durably.storage.commit`).

    A single run with keys is inserted unless a key is taken, and the run
    that took it is read after the write, so no lock is held while anything
    is read. If that run is gone by then (the pending run of a concurrency
    key was claimed, a run was deleted), the insert is tried again. Several
    runs with keys are resolved in order in one write transaction: a later
    request may coalesce onto an earlier one.

    It returns each run's row with its disposition (:class:`Enqueued`).

    ``trace_context``: the trace the trigger was made in, stored with each
    run it creates (``durably_runs.trace_context``, written by an
    instrumented instance only: see :mod:`durably.instrumentation`).
    """
    if cannot_conflict(requests):
        rows, batch = new_runs(requests, now, trace_context)
        yield Write(batch)
        return _created(rows)
    if len(requests) > 1:
        written: Enqueued = yield Transaction(enqueue_many, (requests, now, trace_context))
        return written
    request = requests[0]
    row, batch = keyed_run(request, now, trace_context)
    for _ in range(_KEYED_ATTEMPTS):
        outcomes = yield Write(batch)
        if outcomes[0].rowcount == 1:
            return _created([row])
        taken = yield Read(taken_by, (request,))
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


def enqueue_many(
    conn: Connection,
    requests: Sequence[EnqueueRequest],
    now: int,
    trace_context: str | None = None,
) -> Enqueued:
    """Enqueue in order on one connection; the caller's transaction makes it all-or-nothing."""
    if not cannot_conflict(requests):
        return _resolved([enqueue(conn, request, now, trace_context) for request in requests])
    rows, batch = new_runs(requests, now, trace_context)
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
        "queue": request["queue"],
        "priority": request["priority"],
        "run_at": claimable_at(request, now),
        "created_at": now,
        "updated_at": now,
    }


def claimable_at(request: EnqueueRequest, now: int) -> int:
    """When the run ``request`` creates at ``now`` becomes claimable (ms since the epoch)."""
    run_at = request["run_at"]
    return now + request["delay_ms"] if run_at is None else run_at


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
