"""How schedules are stored: declared (upserted), read, advanced, paused and resumed.

Every process of an app declares the same schedules; what is stored is the
last declaration written, and the state every process shares: whether a
schedule is paused, and the latest tick handled (``last_tick_at``). That
tick only moves forward (``WHERE last_tick_at < :tick``): a process that
computed its ticks from an older read cannot move it back, and a tick two
processes both enqueue is one run anyway (its idempotency key).

The statements are prebuilt (:mod:`durably.storage.statements`), so each
write here is one batch: one request to a remote server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from ..schema import schedules
from .operation import Operation, Write


class Declared(TypedDict):
    """A validated declaration: the columns ``durably.schedule(...)`` decides."""

    name: str
    job_name: str
    cron: str | None
    every_ms: int | None
    timezone: str
    input: str
    labels: str
    catch_up: str


DECLARED = ("job_name", "cron", "every_ms", "timezone", "input", "labels", "catch_up")
"""The columns a declaration sets; declaring a schedule again with the same ones changes nothing."""
TIMETABLE = ("cron", "every_ms", "timezone")

_NAME = sa.bindparam("name", type_=sa.String)
_NOW = sa.bindparam("now", type_=sa.BigInteger)
_TICK = sa.bindparam("tick", type_=sa.BigInteger)


def _upsert() -> sa.sql.dml.UpdateBase:
    """Insert a declared schedule, or update the stored one where the declaration differs.

    A new schedule starts from its declaration: ``last_tick_at`` is now, so
    no run is made for a tick before it. A changed timetable starts afresh
    the same way; a changed input, job or policy keeps its place.
    """
    insert = sqlite_insert(schedules).values(
        {
            **{column: sa.bindparam(column) for column in ("name", *DECLARED)},
            "last_tick_at": _NOW,
            "created_at": _NOW,
            "updated_at": _NOW,
        }
    )
    new = insert.excluded
    differs = sa.or_(*(schedules.c[column].is_distinct_from(new[column]) for column in DECLARED))
    retimed = sa.or_(*(schedules.c[column].is_distinct_from(new[column]) for column in TIMETABLE))
    return insert.on_conflict_do_update(
        index_elements=[schedules.c.name],
        set_={
            **{column: new[column] for column in DECLARED},
            "updated_at": new.updated_at,
            "last_tick_at": sa.case(
                (sa.and_(retimed, schedules.c.last_tick_at < new.last_tick_at), new.last_tick_at),
                else_=schedules.c.last_tick_at,
            ),
        },
        where=differs,
    )


_UPSERT = _upsert()
_ADVANCE = (
    schedules.update()
    .where(schedules.c.name == _NAME, schedules.c.last_tick_at < _TICK)
    .values(last_tick_at=_TICK)
)
_PAUSE = (
    schedules.update()
    .where(schedules.c.name == _NAME)
    .values(paused=1, updated_at=_NOW)
    .returning(*schedules.c)
)
_RESUME = (
    schedules.update()
    .where(schedules.c.name == _NAME)
    .values(
        paused=0,
        updated_at=_NOW,
        # The ticks that came while it was paused are not caught up.
        last_tick_at=sa.case(
            (sa.and_(schedules.c.paused == 1, schedules.c.last_tick_at < _NOW), _NOW),
            else_=schedules.c.last_tick_at,
        ),
    )
    .returning(*schedules.c)
)


def declare_op(declared: Sequence[Declared], now: int) -> Operation[None]:
    """Store these declarations (insert new schedules, update changed ones): one write."""
    if declared:
        yield Write([(_UPSERT, [{**row, "now": now} for row in declared])])


def advance_op(ticks: Mapping[str, int]) -> Operation[None]:
    """Move each schedule's latest tick handled forward to the given tick (never back)."""
    if ticks:
        yield Write([(_ADVANCE, [{"name": name, "tick": tick} for name, tick in ticks.items()])])


def pause_op(name: str, paused: bool, now: int) -> Operation[Mapping[str, Any] | None]:
    """Pause (or resume) a schedule; its row as it is now, or None if there is no such schedule."""
    outcomes = yield Write([(_PAUSE if paused else _RESUME, {"name": name, "now": now})])
    rows = outcomes[0].rows
    return rows[0] if rows else None


_DELETE = schedules.delete().where(schedules.c.name == _NAME)


def delete_op(name: str) -> Operation[bool]:
    """Delete a stored schedule; False if there was none. Its runs stay."""
    (outcome,) = yield Write([(_DELETE, {"name": name})])
    return bool(outcome.rowcount == 1)


def read_schedules(conn: Connection) -> list[RowMapping]:
    """Every stored schedule, by name."""
    return list(conn.execute(sa.select(schedules).order_by(schedules.c.name)).mappings())


def read_schedule(conn: Connection, name: str) -> RowMapping | None:
    return conn.execute(sa.select(schedules).where(schedules.c.name == name)).mappings().first()
