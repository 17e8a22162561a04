"""What a driver error means: a lock, a read-only file, a taken key, a missing schema.

Driver errors are translated into :mod:`durably.errors` types here and
nowhere else. Both local drivers are covered: ``sqlite3`` raises
``sqlite3.Error`` subclasses (wrapped by SQLAlchemy in ``DBAPIError``), and
libSQL's driver raises a bare ``ValueError`` carrying SQLite's message.
PostgreSQL's messages (psycopg) are read here too: a missing table, a taken key.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from ..errors import DatabaseError, DatabaseLockedError, SchemaError

_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[^\n\[]+)")
_POSTGRESQL_UNIQUE = re.compile(
    r"duplicate key value violates unique constraint.*?DETAIL:\s+Key \((?P<columns>[^)]*)\)",
    re.DOTALL,
)
_POSTGRESQL_MISSING = re.compile(r'relation "durably_\w+" does not exist|column \S+ does not exist')


class UniqueViolation(Exception):
    """A UNIQUE index refused a write; ``columns`` are the ``table.column`` names it names."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        super().__init__(", ".join(columns))
        self.columns = columns


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc)


def is_locked_error(exc: BaseException) -> bool:
    text = _message(exc).lower()
    return "database is locked" in text or "sqlite_busy" in text or "database is busy" in text


def is_readonly_error(exc: BaseException) -> bool:
    return "readonly database" in _message(exc).lower()


def unique_violation(exc: BaseException) -> UniqueViolation | None:
    """The columns of a UNIQUE violation, from either driver (libSQL raises bare ValueError)."""
    text = _message(exc)
    match = _UNIQUE.search(text)
    if match is not None:
        return UniqueViolation(tuple(c.strip() for c in match.group("columns").split(",")))
    match = _POSTGRESQL_UNIQUE.search(text)
    if match is None:
        return None
    orig = getattr(exc, "orig", exc)
    table = getattr(getattr(orig, "diag", None), "table_name", None) or "?"
    columns = tuple(f"{table}.{c.strip()}" for c in match.group("columns").split(","))
    return UniqueViolation(columns)


def translate(exc: BaseException) -> BaseException:
    """Map a driver/SQLAlchemy error to a durably error (or return it unchanged)."""
    if isinstance(exc, sa.exc.TimeoutError):
        return DatabaseError(
            f"No connection of durably's pool came free in time ({exc.args[0]}): more "
            "threads needed one at once than the pool holds"
        )
    text = _message(exc)
    lower = text.lower()
    missing = "no such table: durably_" in lower or "no such column" in lower
    if missing or _POSTGRESQL_MISSING.search(text):
        return SchemaError(
            f"The durably tables are missing or out of date ({text}). "
            "Call durably.migrate() or run `alembic upgrade head`."
        )
    if "readonly database" in lower or "read-only" in lower:
        return DatabaseError(f"The database is read-only: {text}")
    if "unable to open database" in lower or "disk i/o error" in lower:
        return DatabaseError(f"The database cannot be opened: {text}")
    if "file is not a database" in lower or "malformed" in lower:
        return DatabaseError(f"The database file is damaged or not a database: {text}")
    if is_driver_error(exc):
        return DatabaseError(text)
    return exc


def may_send_again(exc: Exception) -> bool:
    """Whether statements whose transaction failed with ``exc`` may be sent again.

    Not after the lock timeout (they were not refused for what they are),
    and not when a remote server may have committed them: a driver error
    whose ``executed`` is None says its answer was lost (the contract of
    :mod:`durably.hrana.exceptions`).
    """
    if isinstance(exc, DatabaseLockedError):
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if getattr(cause, "executed", True) is None:
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or getattr(cause, "orig", None)
    return True


def is_driver_error(exc: BaseException) -> bool:
    # libsql_experimental reports every SQL error as a bare ValueError.
    return isinstance(exc, sa.exc.DBAPIError) or type(exc) is ValueError
