"""Prebuilt statements: compiled once, then handed to the driver as they are.

A write batch is a list of ``(statement, parameters)`` pairs whose
statements are module constants (the claim, a step row, a completion). Each
is compiled on first use and kept; a call then only picks its parameters,
in order, from the caller's mapping, and runs on the driver's own cursor.
SQLAlchemy's execution machinery per call (``construct_params``, a
``Connection``, result objects) costs more than SQLite takes to run such a
statement, and the claim path runs several per run.

Many rows of one ``INSERT`` (a batch trigger) go as multi-row ``INSERT``
statements of :data:`ROWS_PER_INSERT` rows, the rest through
``executemany``: ``sqlite3``'s ``executemany`` steps and resets the
statement once per row.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one statement of a write batch did.

    ``rows`` holds what a statement with ``RETURNING`` returned, by column name.
    """

    rowcount: int
    rows: Sequence[Mapping[str, Any]] = ()


Statement = tuple[UpdateBase, Mapping[str, Any] | Sequence[Mapping[str, Any]]]
Batch = Sequence[Statement]
"""Prebuilt statements and their parameters, run in order as one transaction.

A list of parameter mappings runs its statement once for each (the driver's
``executemany``); its outcome counts the rows of all of them.
"""

ROWS_PER_INSERT = 100
"""Rows of values one ``INSERT`` carries when a batch inserts many."""
_MAX_PARAMETERS = 999
"""Parameters one statement may have in every SQLite still around (3.32 raised it to 32,766)."""
_ROW_OF_PARAMETERS = re.compile(r" VALUES (\(\?(?:, \?)*\))")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A write-batch statement, compiled once.

    ``pick`` reads the driver's parameters, in order, from the caller's
    parameters of the same names; ``built_in`` holds the values built into
    the statement (``count + 1``), which a caller's parameter of the same
    name overrides. ``rows_sql`` is, for an ``INSERT … VALUES (?, …)``, the
    same statement with ``rows_per_insert`` rows of values.
    """

    sql: str
    built_in: Mapping[str, Any]
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    rows_sql: str | None
    rows_per_insert: int

    @classmethod
    def compile(cls, statement: UpdateBase, dialect: sa.Dialect) -> Prepared:
        compiled = statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise TypeError(f"write_batch takes no expanding IN parameters: {statement}")
        keys = []
        built_in = {}
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.callable is not None:
                raise TypeError(f"write_batch takes no callable parameters: {name}")
            keys.append(bind.key)
            if not bind.required:
                built_in[bind.key] = bind.value
        sql = compiled.string
        rows_sql, rows_per_insert = None, 1
        values = _ROW_OF_PARAMETERS.search(sql)
        if values is not None and sql.count("?") == len(keys) == values[1].count("?"):
            rows_per_insert = min(ROWS_PER_INSERT, _MAX_PARAMETERS // len(keys))
            rows = ", ".join([values[1]] * rows_per_insert)
            rows_sql = sql[: values.start(1)] + rows + sql[values.end(1) :]
        return cls(sql, built_in, _tuple_getter(keys), rows_sql, rows_per_insert)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's positional parameters (a tuple: the libSQL driver takes no list)."""
        if self.built_in:
            params = {**self.built_in, **params}
        return self.pick(params)


class Compiled(NamedTuple):
    """A statement of one write batch: its prepared form and the driver's parameters."""

    prepared: Prepared
    args: list[tuple[Any, ...]]
    many: bool


class StatementCache:
    """The prepared form of every statement a :class:`~durably.storage.Database` has run."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        self._prepared: dict[UpdateBase, Prepared] = {}

    def compile_batch(self, batch: Batch) -> list[Compiled]:
        statements: list[Compiled] = []
        for statement, params in batch:
            prepared = self._prepared.get(statement)
            if prepared is None:
                prepared = self._prepared[statement] = Prepared.compile(statement, self._dialect)
            if isinstance(params, Mapping):
                statements.append(Compiled(prepared, [prepared.args(params)], many=False))
            else:
                args = [prepared.args(one) for one in params]
                statements.append(Compiled(prepared, args, many=True))
        return statements


def _tuple_getter(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``params -> (params[key] for key in keys)`` as a tuple, in one C call when it can be."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)  # two or more keys: it returns a tuple
    return lambda params: tuple(params[key] for key in keys)


def run_local(raw: Any, statements: Sequence[Compiled]) -> list[Outcome]:
    """Run compiled statements as one transaction on a local driver connection.

    One statement is a transaction of its own in the driver's autocommit
    mode, and a writing statement takes the write lock before it reads, as
    ``BEGIN IMMEDIATE`` does: a claim or a step result needs no ``BEGIN``
    and ``COMMIT`` of its own.
    """
    alone = len(statements) == 1 and not statements[0].many
    if not alone:
        raw.cursor().execute("BEGIN IMMEDIATE")
    try:
        outcomes = [_execute(raw, statement) for statement in statements]
        if not alone:
            raw.cursor().execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.rollback()
        raise
    return outcomes


def _execute(raw: Any, statement: Compiled) -> Outcome:
    # A cursor per statement: libSQL's cursor.rowcount adds up every
    # statement the cursor has run. Closed at once, even on error: a libSQL
    # cursor kept alive by a traceback leaves its statement in progress, and
    # the connection, back in the pool, then cannot commit anything.
    if statement.many:
        return Outcome(_execute_many(raw, statement))
    cursor = raw.cursor()
    try:
        cursor.execute(statement.prepared.sql, statement.args[0])
        rows = _fetch_named(cursor) if cursor.description else ()
        return Outcome(cursor.rowcount, rows)
    finally:
        cursor.close()


def _execute_many(raw: Any, statement: Compiled) -> int:
    """Run a statement once per row of ``args``; the rows it changed in all."""
    prepared, args = statement.prepared, statement.args
    per = prepared.rows_per_insert
    whole = 0 if prepared.rows_sql is None else len(args) - len(args) % per
    changed = 0
    for start in range(0, whole, per):
        cursor = raw.cursor()
        try:
            cursor.execute(prepared.rows_sql, tuple(chain.from_iterable(args[start : start + per])))
            changed += cursor.rowcount
        finally:
            cursor.close()
    if whole < len(args):
        cursor = raw.cursor()
        try:
            cursor.executemany(prepared.sql, args[whole:])
            changed += cursor.rowcount
        finally:
            cursor.close()
    return changed


def _fetch_named(cursor: Any) -> list[dict[str, Any]]:
    """Every row left on a driver cursor, as a dict by column name.

    Fetched before the cursor's ``rowcount`` is read: SQLite counts the rows
    an ``UPDATE … RETURNING`` changed only as they are stepped through.
    """
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
