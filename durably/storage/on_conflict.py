"""``INSERT … ON CONFLICT`` written once, for SQLite and PostgreSQL alike.

durably's upserts (a step attempt, a run with keys, a schedule) are module
constants built with SQLAlchemy's SQLite ``insert``, compiled once per
dialect by the storage layer (:mod:`durably.storage.statements`). Both
databases spell ``ON CONFLICT (…) [WHERE …] DO NOTHING | DO UPDATE SET … [WHERE …]``
and ``excluded.column`` the same way; only SQLAlchemy's clause objects differ
(PostgreSQL's also knows a named constraint as the target). Here the SQLite
clause is compiled for PostgreSQL by PostgreSQL's own compiler, so every
upsert stays one constant and the SQLite path is compiled exactly as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import dml as postgresql_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler


def _as_postgresql(clause: sqlite_dml.OnConflictClause, kind: type[Any]) -> Any:
    """The same target, set and where as PostgreSQL's clause object (no named constraint)."""
    converted = object.__new__(kind)
    converted.__dict__.update(clause.__dict__)
    converted.constraint_target = None
    return converted


@compiles(sqlite_dml.OnConflictDoNothing, "postgresql")
def _do_nothing(clause: sqlite_dml.OnConflictDoNothing, compiler: SQLCompiler, **kw: Any) -> str:
    converted = _as_postgresql(clause, postgresql_dml.OnConflictDoNothing)
    return str(compiler.process(converted, **kw))


@compiles(sqlite_dml.OnConflictDoUpdate, "postgresql")
def _do_update(clause: sqlite_dml.OnConflictDoUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    converted = _as_postgresql(clause, postgresql_dml.OnConflictDoUpdate)
    return str(compiler.process(converted, **kw))
