"""PostgreSQL: the same three ways in as :class:`~durably.storage.Database`, none of SQLite's machinery.

A PostgreSQL server has many writers at once and its own row locks, so what
SQLite needs around a write is not needed here, and none of it is used: no
process write lock or write turns (:mod:`durably.storage.commit.turns`), no
group commit (its single-writer assumption does not hold: concurrent
transactions commit side by side), no checkpointer, no ``BEGIN IMMEDIATE``.
Each write batch is one transaction on a pooled connection of its own, run
through SQLAlchemy; the pool holds a connection per worker slot.

Isolation is the server's default, READ COMMITTED: every statement of
durably's is fenced in its own ``WHERE`` (the lease generation), and the
claim locks the row it takes (``FOR UPDATE SKIP LOCKED``, see
:mod:`durably.core.claim`), so a statement never acts on a row another
transaction changed under it. A lock not granted within ``lock_timeout``
raises :class:`~durably.errors.DatabaseLockedError`, as on SQLite; a
deadlock or serialization failure (the server rolled the transaction back
whole) is sent again until then.

The pool does not ping a connection when it hands it out (a round trip
before every transaction). A pooled connection the server has dropped
meanwhile (a restart, a terminated backend, a proxy's idle timeout) fails
at the transaction's first statement instead; SQLAlchemy then invalidates
it and every connection the pool held from before, and the transaction is
sent once more on a fresh connection. That is safe only while nothing of it
can have been kept: a disconnect before ``COMMIT`` was sent leaves the
server to roll the transaction back with the dead backend, so it is sent
again. A disconnect during ``COMMIT`` leaves its outcome unknown (the server
may have committed before the reply was lost), and it is never sent again:
not every batch would survive being applied twice (a trigger's ``INSERT``
would meet its own row and report a taken key; a keyed step's write is
fenced, but a plain read-then-write passed to :meth:`PostgresDatabase.write`
need not be), so the caller gets a :class:`~durably.errors.DatabaseError`
saying so, as it would for any error of the server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Compiled, Connection, Engine
from sqlalchemy.sql.dml import UpdateBase
from typing_extensions import ParamSpec

from ..errors import DatabaseError, DatabaseLockedError, ValidationError
from . import on_conflict as _on_conflict  # noqa: F401  (compiles upserts for PostgreSQL)
from .driver_errors import translate
from .statements import Batch, Outcome

T = TypeVar("T")
P = ParamSpec("P")

RETRIED_STATES = ("40001", "40P01")
"""SQLSTATEs after which the server rolled the transaction back whole: serialization
failure and deadlock. Nothing of it was kept; it is sent again."""
LOCK_NOT_AVAILABLE = "55P03"
"""SQLSTATE of a lock not granted within the connection's ``lock_timeout``."""
FIRST_BACKOFF = 0.001
MAX_BACKOFF = 0.05


def create_engine(url: URL, *, pool_size: int, lock_timeout: float) -> Engine:
    """durably's engine on a PostgreSQL server: the server waits ``lock_timeout`` for a lock.

    No ``pool_pre_ping``: a dropped connection is found by the transaction that uses it,
    which is then sent again (see the module).
    """
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=lock_timeout,
        connect_args={"options": f"-c lock_timeout={max(1, int(lock_timeout * 1000))}"},
    )


class PostgresDatabase:
    """One engine on a PostgreSQL server plus the rules for running durably's operations on it."""

    remote = False
    """Not a libSQL server (which is what ``remote`` means to the rest of durably)."""

    def __init__(
        self, url: URL, *, pool_size: int = 5, lock_timeout: float = 30.0, auth_token: str | None
    ) -> None:
        if auth_token is not None:
            raise ValidationError(
                "auth_token is only used with a remote libSQL URL; give PostgreSQL's "
                "password in the URL"
            )
        self.url = url
        self.driver = url.get_driver_name()
        self.lock_timeout = lock_timeout
        self.writes = 0
        self.engine: Engine = create_engine(url, pool_size=pool_size, lock_timeout=lock_timeout)
        self._count_lock = threading.Lock()
        self._statements = _StatementCache(self.engine.dialect)

    # -- the three ways in ----------------------------------------------------

    def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in one transaction."""
        return self._retrying(lambda: self._in_transaction(fn, args, kwargs))

    def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in one transaction and commit it."""
        result = self._retrying(lambda: self._in_transaction(fn, args, kwargs))
        self.count_write()
        return result

    def write_batch(self, batch: Batch) -> list[Outcome]:
        """Run ``batch`` as one transaction; return each statement's outcome."""
        outcomes = self._retrying(
            lambda: self._in_transaction(_run_batch, (batch, self._statements), {})
        )
        self.count_write()
        return outcomes

    def write_batches(self, batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        """Each batch in a transaction of its own: its outcomes, or its error.

        They are not joined into one transaction: a server commits concurrent
        transactions side by side, and one batch's error must not undo another's.
        """
        results: list[list[Outcome] | Exception] = []
        for batch in batches:
            try:
                results.append(self.write_batch(batch))
            except Exception as exc:
                results.append(exc)
        return results

    # -- how they run ---------------------------------------------------------

    def _in_transaction(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        with self.engine.connect() as conn, conn.begin() as transaction:
            # SQLAlchemy keeps an INSERT's row count only when asked: durably's
            # fenced and keyed inserts (written only if the lease holds, or the
            # key is free) are judged by it.
            result = fn(conn.execution_options(preserve_rowcount=True), *args, **kwargs)
            try:
                transaction.commit()
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise _in_doubt(exc) from exc
                raise
            return result

    def _retrying(self, attempt: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.lock_timeout
        backoff = FIRST_BACKOFF
        reconnected = False
        while True:
            try:
                return attempt()
            except sa.exc.TimeoutError as exc:  # the pool's, not the server's
                raise translate(exc) from exc
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated and not reconnected:
                    # Dropped before COMMIT was sent: nothing of it was kept (see the module).
                    reconnected = True
                    continue
                state = sqlstate(exc)
                if state == LOCK_NOT_AVAILABLE:
                    raise self._still_locked() from exc
                remaining = deadline - time.monotonic()
                if state not in RETRIED_STATES or remaining <= 0:
                    raise translate(exc) from exc
                time.sleep(min(remaining, backoff * (0.5 + random.random())))
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _still_locked(self) -> DatabaseLockedError:
        return DatabaseLockedError(
            f"A lock stayed taken for more than {self.lock_timeout:g}s "
            "(another transaction holds the rows this write needs)"
        )

    # -- around the writes ----------------------------------------------------

    def count_write(self) -> None:
        with self._count_lock:
            self.writes += 1

    def check_caller_connection(self, connection: Connection) -> None:
        """Any connection to the server will do: there is no file to open twice."""

    def remote_address(self) -> tuple[str, str | None]:
        raise ValidationError("A replica follows a remote libSQL server, not PostgreSQL")

    def journal_mode(self) -> str:
        """``"server"``: the server keeps its own write-ahead log."""
        return "server"

    def checkpoint_wal(self) -> tuple[int, int, int] | None:
        return None

    def dispose(self) -> None:
        self.engine.dispose()


class _StatementCache:
    """Each write-batch statement compiled once, as SQLite's are
    (:mod:`durably.storage.statements`).

    Compiled without parameters, so a parameter named like a column (a
    label's ``run_id`` in ``INSERT … SELECT``) stays a parameter, as it is
    on SQLite; a call only fills the compiled statement's parameters in.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[UpdateBase, Compiled] = {}

    def get(self, statement: UpdateBase) -> Compiled:
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = statement.compile(dialect=self._dialect)
        return compiled


def _run_batch(conn: Connection, batch: Batch, cache: _StatementCache) -> list[Outcome]:
    outcomes = []
    for statement, params in batch:
        compiled = cache.get(statement)
        if isinstance(params, Mapping):
            result = conn.exec_driver_sql(compiled.string, compiled.construct_params(params))
        elif params:
            many = [compiled.construct_params(one) for one in params]
            result = conn.exec_driver_sql(compiled.string, many)
        else:
            outcomes.append(Outcome(0))
            continue
        rows = [dict(row) for row in result.mappings()] if result.returns_rows else []
        outcomes.append(Outcome(result.rowcount, rows))
    return outcomes


def _in_doubt(exc: sa.exc.DBAPIError) -> DatabaseError:
    return DatabaseError(
        "The connection to PostgreSQL was lost while a transaction was committing; "
        f"whether it was committed is unknown ({exc.orig})"
    )


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE code of a psycopg error (wrapped by SQLAlchemy or not)."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None
