"""Durable waits: the writes that prepare, suspend on, signal and time out a wait.

A wait is a row of ``durably_waits``, one per run and name. A job prepares
it (:func:`prepare_op`) before it starts the outside work that will signal
it, so a signal that arrives early is kept. When the job then waits for it
and it has no result yet, the run is *suspended* (:func:`suspend_op`): it
becomes ``waiting``, holds no lease, and its ``run_at`` is when it wakes,
its deadline, or :data:`NEVER` without one. The claim takes a waiting run
whose ``run_at`` has come (see :mod:`durably.core.claim`), so waking it
costs no write of its own: a signal (:func:`signal_wait`) sets the waiting
run's ``run_at`` to now in the same transaction as its result, and a
deadline is a ``run_at`` already stored. The resumed run replays its job;
``wait_for`` then finds the result, or writes the timeout itself
(:func:`time_out_op`).

Deadlines, the times a wait records, and the arbitration between a signal
and a timeout use the database's clock (:class:`DbNow`), so processes on
machines whose clocks disagree still agree on whether a signal was in time.
A run's ``run_at`` stays on the workers' clock, like every claim time: a
worker turns the time left into a ``run_at`` of its own clock.

Every write of the lease holder carries the fence
(:data:`~durably.core.leases.FENCE`); the signal, made by anyone, is a
write transaction that reads what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ..errors import ConflictError, NotFoundError, WaitExpiredError
from ..schema import runs, sql_status, waits
from ..status import TERMINAL_STATUSES, RunStatus, WaitStatus
from .leases import FENCE, NOW, Lease, fence
from .operation import Operation, Read, Write

NEVER = 253_402_300_799_999
"""The ``run_at`` of a run waiting for a wait without a deadline: 9999-12-31T23:59:59.999Z."""

SIGNAL = "signal"
SLEEP = "sleep"
"""The kinds of wait: one a signal may end (``prepare_wait``), one only time ends (``sleep``)."""


class DbNow(FunctionElement[int]):
    """The database's clock in milliseconds since the epoch, as an SQL expression.

    It reads the same value wherever it appears in one statement, as SQLite's
    ``'now'`` does: a wait's ``deadline_at`` is exactly its ``created_at`` plus
    the timeout. (PostgreSQL's ``clock_timestamp()`` would move between the
    two; ``statement_timestamp()`` does not.)
    """

    type = sa.BigInteger()
    inherit_cache = True
    name = "db_now"


@compiles(DbNow, "sqlite")
def _db_now_sqlite(element: DbNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"


@compiles(DbNow, "postgresql")
def _db_now_postgresql(element: DbNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(floor(extract(epoch from statement_timestamp()) * 1000) AS BIGINT)"


def _literal(status: WaitStatus) -> Any:
    return sa.literal_column(f"'{status.value}'")


_PENDING = _literal(WaitStatus.PENDING)
_WAIT_ID = sa.bindparam("wait_id", type_=sa.String)
_FENCE_RUN = sa.bindparam("fence_run", type_=sa.String)
_FENCE_GENERATION = sa.bindparam("fence_generation", type_=sa.Integer)
_SAME_NAME = waits.alias("same_name")

_PREPARE = waits.insert().from_select(
    ["id", "run_id", "name", "kind", "status", "metadata", "created_at", "deadline_at"],
    sa.select(
        sa.bindparam("new_wait_id", type_=sa.String),
        _FENCE_RUN,
        sa.bindparam("wait_name", type_=sa.String),
        sa.bindparam("wait_kind", type_=sa.String),
        _PENDING,
        sa.bindparam("wait_metadata", type_=sa.Text),
        DbNow(),
        DbNow() + sa.bindparam("timeout_ms", type_=sa.BigInteger),
    ).where(
        sa.exists().where(FENCE),
        ~sa.exists().where(
            _SAME_NAME.c.run_id == _FENCE_RUN,
            _SAME_NAME.c.name == sa.bindparam("wait_name", type_=sa.String),
        ),
    ),
)
"""A new wait, if the lease holds and the run has none of that name (a replay finds the first)."""

_RESOLVED = sa.exists().where(waits.c.id == _WAIT_ID, waits.c.status != _PENDING)
_SUSPEND_RUN = (
    runs.update()
    .where(FENCE)
    .values(
        status=sql_status(RunStatus.WAITING),
        # A signal that came since the job looked makes the run claimable at once.
        run_at=sa.case((_RESOLVED, NOW), else_=sa.bindparam("wake_at", type_=sa.BigInteger)),
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        updated_at=NOW,
    )
    .returning(runs.c.run_at)
)
"""The run waits, holding no lease, until its ``run_at`` (fenced)."""
_MARK_SUSPENDED = (
    waits.update()
    .where(
        waits.c.id == _WAIT_ID,
        sa.exists().where(
            runs.c.id == _FENCE_RUN,
            runs.c.status == sql_status(RunStatus.WAITING),
            runs.c.lease_generation == _FENCE_GENERATION,
        ),
    )
    .values(suspended_at=sa.func.coalesce(waits.c.suspended_at, DbNow()))
)
"""After ``_SUSPEND_RUN`` in its batch: when the run first waited for this wait."""

_TIME_OUT = (
    waits.update()
    .where(
        waits.c.id == _WAIT_ID,
        waits.c.status == _PENDING,
        waits.c.deadline_at <= DbNow(),
        sa.exists().where(FENCE),
    )
    .values(
        status=_literal(WaitStatus.TIMED_OUT),
        resolved_at=waits.c.deadline_at,
        resumed_at=sa.case((waits.c.suspended_at.is_not(None), DbNow()), else_=sa.null()),
    )
)
"""The wait's deadline has passed (by the database's clock): it ends as a timeout (fenced)."""
_MARK_RESUMED = (
    waits.update()
    .where(
        waits.c.id == _WAIT_ID,
        waits.c.suspended_at.is_not(None),
        waits.c.resumed_at.is_(None),
        sa.exists().where(FENCE),
    )
    .values(resumed_at=DbNow())
)
"""The first time a worker resumed the run past this wait's result (fenced)."""


# -- reading ----------------------------------------------------------------


def _read(conn: Connection, *where: Any) -> RowMapping | None:
    query = sa.select(*waits.c, DbNow().label("db_now")).where(*where)
    return conn.execute(query).mappings().first()


def read_wait(conn: Connection, wait_id: str) -> RowMapping | None:
    """The wait, with the database's clock now (``db_now``); None if there is none."""
    return _read(conn, waits.c.id == wait_id)


def read_named_wait(conn: Connection, run_id: str, name: str) -> RowMapping | None:
    return _read(conn, waits.c.run_id == run_id, waits.c.name == name)


def list_waits(conn: Connection, run_id: str) -> list[RowMapping]:
    """A run's waits in the order they were prepared."""
    query = sa.select(*waits.c).where(waits.c.run_id == run_id)
    return list(conn.execute(query.order_by(waits.c.created_at, waits.c.id)).mappings())


# -- the lease holder's writes --------------------------------------------------


def prepare_op(
    lease: Lease,
    wait_id: str,
    name: str,
    kind: str,
    timeout_ms: int | None,
    metadata_json: str | None,
) -> Operation[tuple[RowMapping | None, bool]]:
    """The run's wait of this name, made now if it has none; and whether it was made now.

    None: the fence refused (the run was cancelled or the lease lost).
    """
    params = {
        **fence(lease, 0),
        "new_wait_id": wait_id,
        "wait_name": name,
        "wait_kind": kind,
        "wait_metadata": metadata_json,
        "timeout_ms": timeout_ms,
    }
    (outcome,) = yield Write([(_PREPARE, params)])
    row: RowMapping | None = yield Read(read_named_wait, (lease.run_id, name))
    return row, outcome.rowcount == 1


def suspend_op(lease: Lease, now: int, wait_id: str, wake_at: int) -> Operation[int | None]:
    """The run waits for ``wait_id`` until ``wake_at`` (fenced); the ``run_at`` it got.

    None: the fence refused. If the wait got its result meanwhile, the run
    is claimable at once (``run_at`` = ``now``).
    """
    params = {**fence(lease, now), "wait_id": wait_id, "wake_at": wake_at}
    outcomes = yield Write([(_SUSPEND_RUN, params), (_MARK_SUSPENDED, params)])
    if not outcomes[0].rows:
        return None
    run_at: int = outcomes[0].rows[0]["run_at"]
    return run_at


def time_out_op(lease: Lease, wait_id: str) -> Operation[bool]:
    """End a wait whose deadline passed as a timeout (fenced); False if it was not ours to end."""
    (outcome,) = yield Write([(_TIME_OUT, {**fence(lease, 0), "wait_id": wait_id})])
    return bool(outcome.rowcount == 1)


def mark_resumed_op(lease: Lease, wait_id: str) -> Operation[bool]:
    (outcome,) = yield Write([(_MARK_RESUMED, {**fence(lease, 0), "wait_id": wait_id})])
    return bool(outcome.rowcount == 1)


# -- signals ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signalled:
    disposition: Literal["accepted", "duplicate", "expired"]
    wait: Mapping[Any, Any]
    """The wait as it is after the signal (as it was, for a duplicate)."""
    woke: bool
    """The signal made its waiting run claimable now."""
    job_name: str | None = None


_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


def signal_wait(
    conn: Connection, wait_id: str, payload_json: str, signal_id: str | None, now: int
) -> Signalled:
    """Give the wait its result, in a write transaction; wake its run if it waits for it.

    The first signal wins. The same ``signal_id`` with an equal payload again
    is a duplicate (whatever happened since); anything else is refused. A
    signal at or after the deadline ends the wait as a timeout, which is
    committed, and is refused by the caller (``expired``).
    """
    query = (
        sa.select(
            *waits.c,
            runs.c.status.label("run_status"),
            runs.c.job_name.label("job_name"),
            DbNow().label("db_now"),
        )
        .outerjoin_from(waits, runs, runs.c.id == waits.c.run_id)
        .where(waits.c.id == wait_id)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFoundError(f"Wait not found: {wait_id}")
    _check_signal(row, payload_json, signal_id)
    if row["status"] == WaitStatus.SIGNALLED.value:
        return Signalled("duplicate", row, woke=False, job_name=row["job_name"])
    end = waits.update().where(waits.c.id == wait_id, waits.c.status == _PENDING)
    deadline = row["deadline_at"]
    if deadline is not None and row["db_now"] >= deadline:
        conn.execute(end.values(status=WaitStatus.TIMED_OUT.value, resolved_at=deadline))
        return Signalled("expired", row, woke=False, job_name=row["job_name"])
    conn.execute(
        end.values(
            status=WaitStatus.SIGNALLED.value,
            payload=payload_json,
            signal_id=signal_id,
            resolved_at=row["db_now"],
        )
    )
    woke = False
    if row["suspended_at"] is not None and row["run_status"] == RunStatus.WAITING.value:
        # The run waits for this wait (it suspended on it, and a wait it
        # suspended on ends only with a result): it is claimable now.
        woken = conn.execute(
            runs.update()
            .where(runs.c.id == row["run_id"], runs.c.status == RunStatus.WAITING.value)
            .where(runs.c.run_at > now)
            .values(run_at=now, updated_at=now)
        )
        woke = woken.rowcount == 1
    ended = read_wait(conn, wait_id)
    return Signalled(
        "accepted", ended if ended is not None else row, woke=woke, job_name=row["job_name"]
    )


def _check_signal(row: Mapping[Any, Any], payload_json: str, signal_id: str | None) -> None:
    """Refuse a signal the wait cannot take (nothing written); a duplicate passes."""
    wait_id, status = row["id"], row["status"]
    if status == WaitStatus.SIGNALLED.value:
        if signal_id is None or row["signal_id"] != signal_id:
            raise ConflictError(f"Wait {wait_id} has already been signalled")
        if _canonical(row["payload"]) != _canonical(payload_json):
            raise ConflictError(
                f"Wait {wait_id} already took signal {signal_id!r} with another payload"
            )
        return
    if row["kind"] != SIGNAL:
        raise ConflictError(f"Wait {wait_id} is a sleep: no signal ends it")
    if status == WaitStatus.TIMED_OUT.value:
        raise WaitExpiredError(f"Wait {wait_id} has timed out: its deadline has passed")
    run_status = row["run_status"]
    if status == WaitStatus.CANCELLED.value or run_status is None or run_status in _TERMINAL:
        raise ConflictError(
            f"Wait {wait_id} cannot accept a signal: its run is {run_status or 'gone'}"
        )


def _canonical(payload_json: str | None) -> str:
    """JSON text that two equal payloads share, whatever their key order.

    Compared as stored JSON (typed values in their envelopes), not decoded:
    a payload of a type JSON has none for (a ``datetime``) would not re-encode.
    A serializer of your own may store text that is not JSON: compared as it is.
    """
    if payload_json is None:
        return "null"
    try:
        stored = json.loads(payload_json)
    except ValueError:
        return payload_json
    return json.dumps(stored, sort_keys=True, separators=(",", ":"))
