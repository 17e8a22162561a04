"""The database boundary: every read and write durably makes goes through :class:`Database`.

* :meth:`Database.write_batch` commits prebuilt statements
  (:mod:`durably.storage.statements`) as one transaction: the writes of the
  claim path, of steps, triggers and the API. Batches that threads send at
  the same moment share a transaction (:mod:`durably.storage.commit`).
* :meth:`Database.write` runs ``fn(conn, ...)`` in ``BEGIN IMMEDIATE``, for
  the few writes that must look at what they read (a batch trigger with
  keys, the reaper, a migration).
* :meth:`Database.read` runs ``fn(conn, ...)`` in a deferred transaction:
  one consistent snapshot.

The retry policy lives here too, once for all three: "database is locked"
is retried with jittered exponential backoff until ``lock_timeout``, a
remote transaction the server dropped unanswered-but-rolled-back is sent
again, and a file found read-only is reopened once. Writes wait for locks in
Python, outside this process's turn at the file, never inside the driver.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import registry
from sqlalchemy.engine import URL, Connection, Engine
from typing_extensions import ParamSpec

from ..errors import DatabaseError, DatabaseLockedError, ValidationError
from .commit.checkpointer import Checkpointer
from .commit.group import GroupCommit
from .commit.turns import WriteTurns, lock_file_for
from .connections import (
    DRIVER_BUSY_TIMEOUT_MS,
    SYNCHRONOUS_LEVELS,
    WRITER_BUSY_TIMEOUT_MS,
    SharedWriter,
    check_same_sqlite,
    connect_outside_pool,
    create_engine,
    driver_error_of,
    set_busy_timeout,
)
from .driver_errors import (
    is_driver_error,
    is_locked_error,
    is_readonly_error,
    may_send_again,
    translate,
)
from .remote import is_transaction_lost, send_batch
from .statements import Batch, Outcome, Statement, StatementCache, run_local
from .urls import display_url, make_engine_url

registry.register("sqlite.hrana", "durably.hrana.dialect", "HranaDialect")

T = TypeVar("T")
P = ParamSpec("P")

FIRST_BACKOFF = 0.0002
"""About one write transaction of another process: the lock is often free again by then."""
MAX_BACKOFF = 0.01
"""The longest wait between two tries at a locked file.

Short, because the program holding the lock may give it up only for
moments: one that writes in a loop leaves gaps of a few tens of
milliseconds, and a writer that sleeps longer than the gap can miss every
one (SQLite's own busy handler sleeps up to 100 ms, which is why durably
waits in Python instead). A try costs microseconds."""


class Database:
    """One engine plus the rules for running durably's operations on it."""

    def __init__(
        self,
        url: str | URL,
        *,
        pool_size: int = 5,
        lock_timeout: float = 30.0,
        synchronous: str = "NORMAL",
        auth_token: str | None = None,
    ) -> None:
        self.url = make_engine_url(url)
        self.driver = self.url.get_driver_name()
        self.remote = self.driver == "hrana"
        """A libSQL server over the network: no PRAGMAs, no WAL of ours to checkpoint."""
        self.lock_timeout = lock_timeout
        self.writes = 0
        """Write transactions committed through this object (an embedded replica
        syncs before a read when this has moved: read-your-writes)."""
        sync_mode = synchronous.upper() if isinstance(synchronous, str) else None
        if sync_mode not in SYNCHRONOUS_LEVELS:
            raise ValidationError(f"Invalid synchronous setting {synchronous!r}")
        self.engine: Engine = create_engine(
            self.url,
            pool_size=pool_size,
            lock_timeout=lock_timeout,
            synchronous=sync_mode,
            auth_token=auth_token,
        )
        self._auth_token = auth_token
        self._driver_error = driver_error_of(self.engine)
        self._statements = StatementCache(self.engine.dialect)
        self._writer = SharedWriter(
            self.engine, None if self.remote else DRIVER_BUSY_TIMEOUT_MS[self.driver]
        )
        self._write_lock = threading.Lock()
        self._turns = WriteTurns(None if self.remote else lock_file_for(self.url.database))
        """Turns at writing the file with durably's other processes."""
        self._gate = _WriteGate(self)
        self._group_commit: GroupCommit[Statement, Outcome] = GroupCommit(
            self._commit_in_turn, retry_alone=may_send_again, gate=self._gate
        )
        self._count_lock = threading.Lock()
        """Guards ``writes`` alone: a caller's commit must not wait on durably's write lock."""
        self._checkpointer = (
            Checkpointer(lambda: connect_outside_pool(self.engine, self.url))
            if self.driver == "pysqlite" and sync_mode in ("OFF", "NORMAL")
            else None
        )
        """Checkpoints soon after writes, off their path (see the checkpointer module)."""

    # -- the three ways in ----------------------------------------------------

    def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in a read transaction (one consistent snapshot)."""
        deadline = time.monotonic() + self.lock_timeout
        return self._retrying(
            lambda: self._in_transaction(fn, args, kwargs, write=False), deadline, in_turn=False
        )

    def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in one ``BEGIN IMMEDIATE`` transaction and commit it."""
        with self._gate:
            result = self._retrying(
                lambda: self._in_transaction(fn, args, kwargs, write=True),
                self._gate.deadline,
                in_turn=True,
            )
        self.count_write()
        return result

    def write_batch(self, batch: Batch) -> list[Outcome]:
        """Run ``batch`` as one write transaction; return each statement's outcome.

        Parameters must be plain ints, strings, bytes or None, and statements
        built once (module constants): each is compiled on first use and kept.
        Batches that threads of this process send while another is being
        committed share the next transaction (group commit); each caller gets
        the outcomes of its own statements.
        """
        return self._group_commit.submit(batch)

    def write_batches(self, batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        """:meth:`write_batch` for several callers at once: each batch's outcomes, or its error."""
        return self._group_commit.submit_all(batches)

    # -- how they run ---------------------------------------------------------

    def _commit_in_turn(self, batch: Batch) -> list[Outcome]:
        """Commit a group commit's batch; inside its gate, so the turn is this thread's."""
        outcomes = self._retrying(lambda: self._run_batch(batch), self._gate.deadline, in_turn=True)
        self.count_write()
        return outcomes

    def _run_batch(self, batch: Batch) -> list[Outcome]:
        statements = self._statements.compile_batch(batch)
        writer = self._writer.get()
        try:
            if self.remote:
                return send_batch(writer, statements)
            try:
                return run_local(writer.dbapi_connection, statements)
            except self._driver_error as exc:
                raise sa.exc.DBAPIError.instance(None, None, exc, self._driver_error) from exc
        except BaseException as exc:
            self._writer.failed(exc)
            raise

    def _in_transaction(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, write: bool
    ) -> T:
        with self.engine.connect() as conn:
            if not write:
                with conn.begin():
                    return fn(conn, *args, **kwargs)
            conn = conn.execution_options(durably_write=True)
            # BEGIN IMMEDIATE fails at once on a locked file, to be retried
            # in Python (see MAX_BACKOFF), not after the driver's busy wait.
            busy_ms = self._writer.busy_ms
            if busy_ms is not None:
                set_busy_timeout(conn.connection, WRITER_BUSY_TIMEOUT_MS)
            try:
                with conn.begin():
                    return fn(conn, *args, **kwargs)
            finally:
                if busy_ms is not None and conn.connection.is_valid:
                    set_busy_timeout(conn.connection, busy_ms)

    def _retrying(self, attempt: Callable[[], T], deadline: float, *, in_turn: bool) -> T:
        """``attempt()`` once, and again while the database is locked, until ``deadline``.

        With ``in_turn``, the caller holds this process's turn at the file;
        it is given back while this sleeps, as between two writes: a process
        stopped here (SIGSTOP, a debugger) must not keep durably's other
        processes out.
        """
        backoff = FIRST_BACKOFF
        reopened = False
        while True:
            try:
                return attempt()
            except sa.exc.TimeoutError as exc:  # the pool's, not the database's
                raise translate(exc) from exc
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                if not reopened and is_transaction_lost(exc):
                    reopened = True  # rolled back whole by the server: nothing of it was kept
                    continue
                if not reopened and is_readonly_error(exc):
                    # SQLite silently opens a file it may not write read-only,
                    # and the pool would keep such connections after the fault
                    # clears: drop them all and try once more on a fresh one.
                    reopened = True
                    self.engine.dispose()
                    continue
                if not is_locked_error(exc):
                    raise (self._missing_directory() or translate(exc)) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._still_locked() from exc
                if in_turn:
                    self._turns.release()
                time.sleep(min(remaining, backoff * (0.5 + random.random())))
                backoff = min(backoff * 2, MAX_BACKOFF)
                if in_turn:
                    self._turns.acquire(deadline)  # or, if it does not come in time, without

    def _missing_directory(self) -> DatabaseError | None:
        """The error for a local file whose directory does not exist, naming both.

        SQLite only says "unable to open database file", which does not say
        which file, nor that a typo in the path (or a volume not mounted) is
        the usual cause.
        """
        if self.remote or not self.url.database:
            return None
        path = Path(self.url.database).expanduser().absolute()
        if path.parent.is_dir():
            return None
        return DatabaseError(
            f"The database {str(path)!r} cannot be opened: its directory {str(path.parent)!r} "
            "does not exist"
        )

    def _still_locked(self) -> DatabaseLockedError:
        return DatabaseLockedError(
            f"The database stayed locked for more than {self.lock_timeout:g}s "
            "(another process holds a write transaction)"
        )

    # -- around the writes ----------------------------------------------------

    def count_write(self) -> None:
        """Count a committed write: durably's own, or a caller's transaction that carried a
        trigger. A replica read after it syncs first (read-your-writes)."""
        with self._count_lock:
            self.writes += 1
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    def check_caller_connection(self, connection: Connection) -> None:
        """Refuse a caller's connection that would open this file through another SQLite."""
        check_same_sqlite(self.url, self.engine, connection)

    def remote_address(self) -> tuple[str, str | None]:
        """The server's ``http(s)://`` address and auth token, as libSQL's own client takes them."""
        if not self.remote:
            raise ValidationError(f"{display_url(self.url)} is a local file, not a libSQL server")
        args, options = self.engine.dialect.create_connect_args(self.url)
        return str(args[0]), self._auth_token or options.get("auth_token")

    def journal_mode(self) -> str:
        """The file's journal mode; ``"remote"`` for a libSQL server, whose files are its own."""
        if self.remote:
            return "remote"
        row = self._pragma("journal_mode")
        return "" if row is None else str(row[0]).lower()

    def checkpoint_wal(self) -> tuple[int, int, int] | None:
        """``PRAGMA wal_checkpoint(TRUNCATE)``: keeps the WAL file from growing forever.

        Returns ``(busy, log_frames, checkpointed_frames)``, or None when the
        database is not in WAL mode or is remote.
        """
        if self.remote:
            return None
        row = self._pragma("wal_checkpoint(TRUNCATE)")
        if row is None or row[1] == -1:
            return None
        return (int(row[0]), int(row[1]), int(row[2]))

    def _pragma(self, pragma: str) -> tuple[Any, ...] | None:
        """The row of a PRAGMA run outside any transaction (a checkpoint cannot run in one).

        Through :meth:`_retrying` like every other call, so that a read-only
        or vanished file reaches the worker as a ``DatabaseError``.
        """

        def attempt() -> tuple[Any, ...] | None:
            with self.engine.connect() as conn:
                row = conn.exec_driver_sql(f"PRAGMA {pragma}").fetchone()
                conn.rollback()
            return None if row is None else tuple(row)

        return self._retrying(attempt, time.monotonic() + self.lock_timeout, in_turn=False)

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._write_lock:
            self._writer.release()
            self._turns.close()
        self.engine.dispose()


class _WriteGate:
    """What every write passes first: this process's write lock, then its turn at the file.

    A turn that does not come in time is done without (``WriteTurns.acquire``):
    SQLite's own lock still keeps the write apart from others, and the retry
    waits that out up to :attr:`deadline`.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.deadline = 0.0
        """When the lock timeout of the write under way ends (``time.monotonic()``)."""

    def __enter__(self) -> None:
        db = self._db
        deadline = time.monotonic() + db.lock_timeout
        db._write_lock.acquire()
        try:
            db._turns.acquire(deadline)
        except BaseException:
            db._write_lock.release()
            raise
        self.deadline = deadline

    def __exit__(self, *exc_info: object) -> None:
        self._db._turns.release()
        self._db._write_lock.release()
