"""Connections: the engine, its SQLite settings, and the connection write batches share.

Every connection of durably's engine is set up the same way on a local
file: WAL journal, the ``synchronous`` level asked for, a short busy
timeout in the driver (durably waits for locks in Python, see
:mod:`durably.storage.database`), and a write-ahead log mark sized for the
driver. Transactions are begun by durably itself: ``BEGIN IMMEDIATE`` for a
write, so SQLite takes the write lock up front and a transaction never fails
half-way on a lock upgrade; ``BEGIN`` for a read.
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from ..errors import ValidationError
from .driver_errors import is_locked_error

DRIVER_BUSY_TIMEOUT_MS = {"pysqlite": 1000, "libsql": 10}
"""How long a connection of durably's engine waits in the driver for a lock.

This is what your own transactions on ``durably.engine`` wait. libSQL's
driver holds the GIL while it waits, freezing every thread of the process,
so it waits 10 ms at most there. durably's own writes retry on top.
"""
WAL_AUTOCHECKPOINT_PAGES = {"pysqlite": 4000, "libsql": 1000}
"""Pages the write-ahead log may hold before a commit copies it into the file (SQLite: 1000).

The commit that crosses the mark copies the log back and syncs the log and
the file, on the path of a trigger or a step; a higher mark makes that rarer
for ``sqlite3`` (whose checkpointer thread also does most of that work
beforehand, see :mod:`durably.storage.commit.checkpointer`). libSQL keeps
SQLite's mark: its driver holds the GIL through a checkpoint, stopping every
thread of the process, an event loop included, for a time that grows with
the log.
"""
WRITER_BUSY_TIMEOUT_MS = 0
"""The driver's wait on the connection write batches share: none.

SQLite's busy handler sleeps 1, 2, 5, 10 ms and on while another process's
write transaction holds the lock for a fraction of that, and it sleeps
inside the write, so this process's other writers queue behind it. durably
waits in Python instead, in short jittered steps, outside its write turn.
"""
WRITER_TURNOVER = 1.0
"""Seconds the shared writer connection stays checked out of the pool."""
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
_SQLITE_LIBRARY = {"pysqlite": "sqlite3", "aiosqlite": "sqlite3", "libsql": "libSQL"}
"""Which copy of SQLite a local driver runs on (see :func:`check_same_sqlite`)."""


def create_engine(
    url: URL, *, pool_size: int, lock_timeout: float, synchronous: str, auth_token: str | None
) -> Engine:
    """durably's engine on ``url``: PRAGMAs on connect, durably's own ``BEGIN``."""
    remote = url.get_driver_name() == "hrana"
    if auth_token is not None and not remote:
        raise ValidationError("auth_token is only used with a remote libSQL URL")
    connect_args: dict[str, Any]
    if remote:
        connect_args = {} if auth_token is None else {"auth_token": auth_token}
    else:
        # The driver must not open transactions behind our back: durably
        # sends BEGIN / BEGIN IMMEDIATE itself (the "begin" hook below).
        connect_args = {"isolation_level": None, "check_same_thread": False}
    engine = sa.create_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=lock_timeout,
    )
    if not remote:
        _set_pragmas_on_connect(engine, url.get_driver_name(), synchronous)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("durably_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _set_pragmas_on_connect(engine: Engine, driver: str, synchronous: str) -> None:
    busy_ms = DRIVER_BUSY_TIMEOUT_MS[driver]
    checkpoint_pages = WAL_AUTOCHECKPOINT_PAGES[driver]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
        finally:
            cursor.close()


def driver_error_of(engine: Engine) -> type[Exception]:
    """What the driver raises: ``sqlite3.Error``; libSQL's driver raises bare ``ValueError``."""
    error: type[Exception] = getattr(engine.dialect.dbapi, "Error", ValueError)
    return error


def checkout(engine: Engine) -> PoolProxiedConnection:
    """A driver connection from the pool, with connect errors wrapped as SQLAlchemy's."""
    driver_error = driver_error_of(engine)
    try:
        return engine.raw_connection()
    except driver_error as exc:  # the pool hands connect errors on unwrapped
        raise sa.exc.DBAPIError.instance(
            None, None, exc, driver_error, connection_invalidated=True
        ) from exc


def set_busy_timeout(pooled: PoolProxiedConnection, milliseconds: int) -> None:
    cursor = pooled.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
    finally:
        cursor.close()


def connect_outside_pool(engine: Engine, url: URL) -> Any:
    """A driver connection of its own, in autocommit mode, that the pool never sees."""
    args, options = engine.dialect.create_connect_args(url)
    options["isolation_level"] = None
    return engine.dialect.connect(*args, **options)


class SharedWriter:
    """The pool connection durably's write batches share, checked out between them.

    They all run under the process's write lock, one at a time, so one
    connection serves them all and the pool's checkout and check-in are
    skipped for most. On a local file it waits for no lock in the driver
    (:data:`WRITER_BUSY_TIMEOUT_MS`) and gets the pool's setting back when it
    returns there, so your transactions on ``durably.engine`` still wait.
    It goes back to the pool after any error but a refused lock, so the pool
    resets it and the retry gets a fresh checkout, and every
    :data:`WRITER_TURNOVER` seconds, so the pool's checkout events and
    recycling still reach it. Only touched under the write lock.
    """

    def __init__(self, engine: Engine, busy_ms: int | None) -> None:
        self._engine = engine
        self.busy_ms = busy_ms
        """The driver's busy timeout on a local file; None for a remote server."""
        self._driver_error = driver_error_of(engine)
        self._connection: PoolProxiedConnection | None = None
        self._since = 0.0

    def get(self) -> PoolProxiedConnection:
        writer = self._connection
        if writer is not None and time.monotonic() - self._since > WRITER_TURNOVER:
            self.release()
            writer = None
        if writer is None:
            writer = checkout(self._engine)
            if self.busy_ms is not None:
                try:
                    set_busy_timeout(writer, WRITER_BUSY_TIMEOUT_MS)
                except self._driver_error as exc:
                    writer.invalidate()
                    raise sa.exc.DBAPIError.instance(None, None, exc, self._driver_error) from exc
            self._connection = writer
            self._since = time.monotonic()
        return writer

    def failed(self, exc: BaseException) -> None:
        """A write on it raised: keep it after a refused lock (rolled back), else return it."""
        if not is_locked_error(exc):
            self.release()

    def release(self) -> None:
        writer, self._connection = self._connection, None
        if writer is None:
            return
        if self.busy_ms is not None and writer.is_valid:
            try:
                set_busy_timeout(writer, self.busy_ms)
            except self._driver_error:
                writer.invalidate()  # never back in the pool without its wait
                return
        writer.close()


def check_same_sqlite(mine: URL, engine: Engine, connection: Connection) -> None:
    """Refuse a caller's connection that opens durably's file through another copy of SQLite.

    Python's ``sqlite3`` and libSQL each carry their own SQLite, and two
    copies in one process do not see each other's file locks (POSIX locks
    belong to the process): when a connection of one closes as "the last",
    it removes the write-ahead log a connection of the other still reads,
    and writes get lost.
    """
    theirs = connection.engine.url
    if mine.get_driver_name() == "hrana" or connection.engine is engine or theirs.host:
        return
    library = _SQLITE_LIBRARY.get(mine.get_driver_name())
    other = _SQLITE_LIBRARY.get(theirs.get_driver_name())
    if library is None or other is None or library == other:
        return
    if not theirs.database or not mine.database:
        return
    if os.path.realpath(theirs.database) != os.path.realpath(mine.database):
        return
    raise ValidationError(
        f"This connection opens {theirs.database!r} through {other}, and durably opens it "
        f"through {library}: two copies of SQLite in one process do not see each other's "
        "locks and can lose writes. Use durably.engine, or the same URL as durably."
    )
