"""Connections, transactions and driver errors: how durably talks to SQLite/libSQL.

Every database operation in durably is a plain function of a SQLAlchemy
``Connection``; :class:`Database` runs it:

* ``write(fn)`` inside ``BEGIN IMMEDIATE`` (SQLite takes the write lock up
  front, so a transaction never fails half-way on a lock upgrade), serialised
  with the other writes of this process by a lock, and committed before
  ``write`` returns. User code never runs inside it.
* ``read(fn)`` inside a deferred transaction (one consistent snapshot).

Both retry "database is locked" with jittered exponential backoff until
``lock_timeout``. The write batches' connection does not wait in the driver
at all: the wait happens in Python, in steps sized to another process's
write transaction, and outside this process's write lock (see
``_WRITER_BUSY_TIMEOUT_MS``).

Driver errors are translated into :mod:`durably.errors` types here and
nowhere else.
"""

from __future__ import annotations

import operator
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Concatenate, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import registry
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.dml import UpdateBase
from typing_extensions import ParamSpec

from .checkpointer import Checkpointer
from .errors import DatabaseError, DatabaseLockedError, SchemaError, ValidationError
from .group_commit import GroupCommit
from .hrana import dbapi as hrana_dbapi
from .hrana.dbapi import TransactionLost
from .hrana.dialect import URL_OPTIONS
from .write_turns import WriteTurns, lock_file_for

registry.register("sqlite.hrana", "durably.hrana.dialect", "HranaDialect")

T = TypeVar("T")
P = ParamSpec("P")

SUPPORTED_DRIVERS = ("pysqlite", "libsql")
"""``sqlite:///`` (stdlib ``sqlite3``) and ``sqlite+libsql:///`` (libSQL)."""

ASYNC_DRIVER_ALIASES = {"aiosqlite": "sqlite+pysqlite", "aiolibsql": "sqlite+libsql"}
"""Async spellings accepted for the same files: ``sqlite+aiosqlite:///`` is ``sqlite:///``."""

_DRIVER_BUSY_TIMEOUT_MS = {"pysqlite": 1000, "libsql": 10}
"""How long a connection of durably's engine waits in the driver for a lock.

This is what your own transactions on ``durably.engine`` wait (libSQL's
driver holds the GIL while it waits, freezing every thread of the process:
10 ms at most there). durably's own writes retry on top, in ``_retrying``.
"""
_WAL_AUTOCHECKPOINT_PAGES = {"pysqlite": 4000, "libsql": 1000}
"""Pages the write-ahead log may hold before a commit copies it into the file (SQLite: 1000).

The commit that crosses the mark copies the log back and syncs the log and
the file, even at ``synchronous = NORMAL``: two ``fsync`` calls on the path
of a trigger or a step. A run's writes touch several B-trees, so at
SQLite's 1,000 pages that happened about once per 150-200 single triggers.
At 4,000 it happens a quarter as often, for a log of at most about 16 MB
between checkpoints (the idle maintenance truncates it). Measured: single
triggers about 9% faster (median of six interleaved pairs), W2 on a young
file about 10%, W2 on a file with 100,000 finished runs unchanged; a mark
of 8,000 gained nothing more.

On ``sqlite:///`` at OFF or NORMAL, durably's checkpointer thread syncs
and copies most of the log before a commit gets to the mark
(:mod:`durably.checkpointer`), so that commit's checkpoint is short.

libSQL keeps SQLite's mark. Its driver holds the GIL while a checkpoint
copies the log and syncs, so every thread of the process stops meanwhile,
an event loop included, for a time that grows with the log: the asyncio
engine's loop (``tests/test_loop_lag.py``) was late by up to 52-78 ms at
4,000 pages, 17-19 ms at 1,000.
"""
_WRITER_BUSY_TIMEOUT_MS = 0
"""The same for the one connection durably's write batches share (``_on_writer``).

It does not wait in the driver: ``_retrying`` waits in Python instead.
SQLite's own busy handler sleeps 1 ms, then 2, 5, 10 ms and on, while
another process's write transaction holds the lock for a tenth of that,
and it sleeps inside the write, so this process's other writers queue
behind it (libSQL's driver also holds the GIL while it sleeps). Two worker
processes on one file drained W5 15-20% faster this way on ``sqlite3``,
where the wait was 1 s, and about 40% faster on libSQL, where it was 10 ms;
a single process, which never waits for another, ran the same.
"""
_SQLITE_LIBRARY = {"pysqlite": "sqlite3", "aiosqlite": "sqlite3", "libsql": "libSQL"}
"""Which copy of SQLite a local driver runs on (see :meth:`Database.check_caller_connection`)."""
_FIRST_BACKOFF = 0.0002
"""About one write transaction of another process: the lock is often free again by then."""
_MAX_BACKOFF = 0.25
_WRITER_TURNOVER = 1.0
"""Seconds the writer connection stays checked out of the pool (see :meth:`Database._on_writer`)."""

_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[^\n\[]+)")


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
    match = _UNIQUE.search(_message(exc))
    if match is None:
        return None
    columns = tuple(c.strip() for c in match.group("columns").split(","))
    return UniqueViolation(columns)


def translate(exc: BaseException) -> BaseException:
    """Map a driver/SQLAlchemy error to a durably error (or return it unchanged)."""
    text = _message(exc)
    lower = text.lower()
    if "no such table: durably_" in lower or "no such column" in lower:
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


def _may_send_again(exc: Exception) -> bool:
    """Whether statements whose transaction failed with ``exc`` may be sent again.

    Not after the lock timeout (they were not refused for what they are),
    and not when a remote server may have committed them: its answer was
    lost (``executed is None``, see :mod:`durably.hrana.exceptions`).
    """
    if isinstance(exc, DatabaseLockedError):
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, hrana_dbapi.Error) and cause.executed is None:
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or getattr(cause, "orig", None)
    return True


def is_driver_error(exc: BaseException) -> bool:
    # libsql_experimental reports every SQL error as a bare ValueError.
    return isinstance(exc, sa.exc.DBAPIError) or type(exc) is ValueError


REMOTE_SCHEMES = {"libsql": True, "https": True, "wss": True, "http": False, "ws": False}
"""URL schemes of remote libSQL databases (as Turso prints them), and whether each means TLS."""


def make_engine_url(url: str | URL) -> URL:
    """Validate a database URL and pick the driver durably uses for it.

    Local files keep their driver (``sqlite:///`` → stdlib ``sqlite3``,
    ``sqlite+libsql:///`` → libSQL). A remote libSQL URL
    (``sqlite+libsql://HOST``, or ``libsql://HOST`` / ``https://HOST`` as
    Turso prints them) goes to durably's own Hrana driver,
    ``sqlite+hrana://HOST`` (see :mod:`durably.hrana`).
    """
    if isinstance(url, str):
        scheme, sep, rest = url.partition("://")
        if sep and scheme.lower() in REMOTE_SCHEMES:
            if not rest.split("?")[0].strip("/"):
                raise ValidationError(f"Invalid database URL {url!r}: it names no host")
            secure = "true" if REMOTE_SCHEMES[scheme.lower()] else "false"
            joiner = "&" if "?" in rest else "?"
            if "secure=" not in rest:
                rest = f"{rest}{joiner}secure={secure}"
            url = f"sqlite+hrana://{rest}"
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ValidationError(f"Invalid database URL {str(url)!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        raise ValidationError(
            f"Unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "durably supports sqlite:///path.db, sqlite+libsql:///path.db and remote "
            "libSQL servers (sqlite+libsql://HOST, libsql://HOST)"
        )
    driver = parsed.get_driver_name()
    if driver in ASYNC_DRIVER_ALIASES:
        # One URL serves both engines: async code reaches the database through
        # durably's threads (see Runtime.call), so the blocking driver is used.
        parsed = parsed.set(drivername=ASYNC_DRIVER_ALIASES[driver])
        driver = parsed.get_driver_name()
    if parsed.host and driver == "libsql":
        parsed = parsed.set(drivername="sqlite+hrana")
        driver = "hrana"
    if driver == "hrana":
        if not parsed.host:
            raise ValidationError(
                "A remote libSQL URL needs a host: sqlite+libsql://HOST[:PORT]?secure=true"
            )
        _check_remote_options(parsed)
        return parsed
    if driver not in SUPPORTED_DRIVERS:
        raise ValidationError(
            f"Unsupported SQLite driver {driver!r}; use sqlite:/// or sqlite+libsql:///"
        )
    if parsed.host:
        raise ValidationError(
            f"{parsed.render_as_string(hide_password=True)!r} names a host, but the stdlib "
            "sqlite3 driver only opens local files; use sqlite+libsql://HOST for a remote "
            "libSQL server or sqlite:///path.db for a file"
        )
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed):
        raise ValidationError(
            "In-memory SQLite databases are private to one connection and cannot be shared "
            "by durably's worker threads; use a file, e.g. sqlite:///durably.db"
        )
    return parsed


def _check_remote_options(url: URL) -> None:
    unknown = set(url.query) - set(URL_OPTIONS)
    if unknown:
        raise ValidationError(
            f"Unknown option(s) in the libSQL URL: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(URL_OPTIONS)})"
        )
    secure = str(url.query.get("secure", "false")).lower()
    if secure not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValidationError(f"secure={secure!r} in the libSQL URL: use secure=true or false")
    timeout = url.query.get("timeout")
    if timeout is not None:
        try:
            seconds = float(str(timeout))
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ValidationError(f"timeout={timeout!r} in the libSQL URL: use seconds, e.g. 15")


def display_url(url: URL) -> str:
    """``url`` for messages and logs: password and auth token hidden."""
    return url.difference_update_query(["auth_token", "authToken"]).render_as_string(
        hide_password=True
    )


ENV_URL = "DURABLY_DATABASE_URL"
ENV_AUTH_TOKEN = "DURABLY_AUTH_TOKEN"
TURSO_ENV_URL = "TURSO_DATABASE_URL"
TURSO_ENV_AUTH_TOKEN = "TURSO_AUTH_TOKEN"


def url_from_env(environ: Mapping[str, str], default: str | None = None) -> tuple[str, str | None]:
    """``(url, auth_token)`` from ``DURABLY_DATABASE_URL`` / ``DURABLY_AUTH_TOKEN``.

    Falls back to the pair Turso's tools print, ``TURSO_DATABASE_URL`` /
    ``TURSO_AUTH_TOKEN``, then to ``default``. A token is only returned for
    a remote URL: a local file has no use for one.
    """
    url = environ.get(ENV_URL) or environ.get(TURSO_ENV_URL) or default
    if not url:
        raise ValidationError(
            f"No database configured: set {ENV_URL} (or {TURSO_ENV_URL} and "
            f"{TURSO_ENV_AUTH_TOKEN}), e.g. {ENV_URL}=sqlite:///durably.db"
        )
    token = environ.get(ENV_AUTH_TOKEN) or environ.get(TURSO_ENV_AUTH_TOKEN) or None
    if token is not None and make_engine_url(url).get_driver_name() != "hrana":
        token = None
    return url, token


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one statement of :meth:`Database.write_batch` did.

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


_ROWS_PER_INSERT = 100
"""Rows of values one ``INSERT`` carries when a batch inserts many (see :class:`_Prepared`)."""
_MAX_PARAMETERS = 999
"""Parameters one statement may have in every SQLite still around (3.32 raised it to 32,766)."""
_ROW_OF_PARAMETERS = re.compile(r" VALUES (\(\?(?:, \?)*\))")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A :meth:`Database.write_batch` statement, compiled once.

    ``pick`` reads the driver's parameters, in order, from the caller's
    parameters of the same names; ``built_in`` holds the values built into
    the statement (``count + 1``), which a caller's parameter of the same
    name overrides. Reading parameters straight from the caller's mapping
    skips SQLAlchemy's general ``construct_params``, which costs more than
    SQLite takes to run a small statement; ``operator.itemgetter`` reads
    them in one C call (0.5 µs for a new run's seven, 2.3 µs in a Python
    loop).
    """

    sql: str
    built_in: Mapping[str, Any]
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    rows_sql: str | None
    """For ``INSERT … VALUES (?, …)``: the same with ``rows_per_insert`` rows of values.

    A batch that inserts many rows (``batch_trigger``) sends them that way,
    ``_ROWS_PER_INSERT`` at a time, and only the rest through the driver's
    ``executemany``. ``sqlite3``'s ``executemany`` steps and resets the
    statement for every row: with durably's schema, inserting 5,000 runs
    took 4.5 µs per run that way and 2.3 µs a hundred rows at a time
    (500: 2.4 µs; 2,000: 3.3 µs).
    """
    rows_per_insert: int

    @classmethod
    def compile(cls, statement: UpdateBase, dialect: sa.Dialect) -> _Prepared:
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
            rows_per_insert = min(_ROWS_PER_INSERT, _MAX_PARAMETERS // len(keys))
            rows = ", ".join([values[1]] * rows_per_insert)
            rows_sql = sql[: values.start(1)] + rows + sql[values.end(1) :]
        return cls(sql, built_in, _tuple_getter(keys), rows_sql, rows_per_insert)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's positional parameters (a tuple: the libSQL driver takes no list)."""
        if self.built_in:
            params = {**self.built_in, **params}
        return self.pick(params)


class _Compiled(NamedTuple):
    """A statement of one write batch: its prepared form and the driver's parameters."""

    prepared: _Prepared
    args: list[tuple[Any, ...]]
    many: bool


def _tuple_getter(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``params -> (params[key] for key in keys)`` as a tuple, in one C call when it can be."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)  # two or more keys: it returns a tuple
    return lambda params: tuple(params[key] for key in keys)


def _execute(raw: Any, statement: _Compiled) -> Outcome:
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


def _execute_many(raw: Any, statement: _Compiled) -> int:
    """Run a statement once per row of ``args``; the rows it changed in all.

    An ``INSERT`` goes as few multi-row statements as it can (see
    :attr:`_Prepared.rows_sql`), the rows left over through ``executemany``.
    """
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


def _set_busy_timeout(pooled: PoolProxiedConnection, milliseconds: int) -> None:
    cursor = pooled.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
    finally:
        cursor.close()


def _fetch_named(cursor: Any) -> list[dict[str, Any]]:
    """Every row left on a driver cursor, as a dict by column name.

    Fetched before the cursor's ``rowcount`` is read: SQLite counts the rows
    an ``UPDATE … RETURNING`` changed only as they are stepped through.
    """
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class _GroupGate:
    """What each leader of the group commit passes first: the write lock, then the turn at the file.

    The group is formed once the turn is had (see :meth:`GroupCommit._lead`),
    and :meth:`Database._commit_batch` runs inside it, up to its deadline.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.deadline = 0.0
        """When the lock timeout of the write under way ends (``time.monotonic()``)."""

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._db.lock_timeout
        self._db._take_turn(deadline)
        self.deadline = deadline

    def __exit__(self, *exc_info: object) -> None:
        self._db._end_turn()


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
        self._auth_token = auth_token
        self._write_lock = threading.Lock()
        self._gate = _GroupGate(self)
        self._group_commit: GroupCommit[Statement, Outcome] = GroupCommit(
            self._commit_batch, retry_alone=_may_send_again, gate=self._gate
        )
        self._count_lock = threading.Lock()
        """Guards ``writes`` alone: a caller's commit must not wait on durably's write lock."""
        self._prepared: dict[UpdateBase, _Prepared] = {}
        self._writer: PoolProxiedConnection | None = None
        """The pool connection write batches run on; only touched under ``_write_lock``."""
        self._writer_since = 0.0
        self._turns = WriteTurns(None if self.remote else lock_file_for(self.url.database))
        """Turns at writing the file with durably's other processes (see write_turns)."""
        sync_mode = synchronous.upper()
        if sync_mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValidationError(f"Invalid synchronous setting {synchronous!r}")
        if auth_token is not None and not self.remote:
            raise ValidationError("auth_token is only used with a remote libSQL URL")
        connect_args: dict[str, Any]
        if self.remote:
            connect_args = {} if auth_token is None else {"auth_token": auth_token}
        else:
            # The driver must not open transactions behind our back: we send
            # BEGIN / BEGIN IMMEDIATE ourselves in the "begin" hook below.
            connect_args = {"isolation_level": None, "check_same_thread": False}
        self.engine: Engine = sa.create_engine(
            self.url,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_timeout=lock_timeout,
        )
        # What the driver raises: sqlite3.Error; libSQL's driver raises bare
        # ValueError, which is_driver_error recognises unwrapped.
        self._driver_error: type[Exception] = getattr(
            self.engine.dialect.dbapi, "Error", ValueError
        )
        self._busy_ms: int | None = None
        """The driver's busy timeout on a local file; the writer connection sets its own."""
        self._checkpointer = (
            Checkpointer(self._connect_checkpointer)
            if self.driver == "pysqlite" and sync_mode in ("OFF", "NORMAL")
            else None
        )
        """Checkpoints soon after writes, off their path (see :mod:`durably.checkpointer`)."""
        if not self.remote:
            busy_ms = self._busy_ms = _DRIVER_BUSY_TIMEOUT_MS[self.driver]
            checkpoint_pages = _WAL_AUTOCHECKPOINT_PAGES[self.driver]

            @event.listens_for(self.engine, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                    cursor.execute("PRAGMA journal_mode = WAL")
                    cursor.execute(f"PRAGMA synchronous = {sync_mode}")
                    cursor.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
                finally:
                    cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("durably_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    # -- running operations -------------------------------------------------

    def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in one ``BEGIN IMMEDIATE`` transaction and commit it."""
        return self._retrying(fn, args, kwargs, write=True)

    def write_batch(self, batch: Batch) -> list[Outcome]:
        """Run ``batch`` as one write transaction; return each statement's outcome.

        For the frequent writes whose statements are known up front (a step
        result, a heartbeat, a completion). The statements are compiled once
        and handed to the driver as they are: no SQLAlchemy execution
        machinery per call, so parameters must be plain ints, strings, bytes
        or None, and statements must be built once (module constants): each
        is compiled on first use and kept.

        Batches that threads of this process send while another is being
        committed share the next transaction (:mod:`durably.group_commit`);
        each caller gets the outcomes of its own statements.

        On a remote server the whole transaction travels as one request
        (:meth:`durably.hrana.dbapi.Connection.execute_transaction`): one
        round trip, and a process that dies mid-way leaves no transaction
        open on the server. Locally it is ``BEGIN IMMEDIATE``, the
        statements and ``COMMIT`` on the driver's cursor, or the statement
        alone when there is one.
        """
        return self._group_commit.submit(batch)

    def write_batches(self, batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        """:meth:`write_batch` for several callers at once: each batch's outcomes, or its error.

        The batches share a transaction as concurrent ``write_batch`` calls
        do, with the same rules when it fails; a batch's error is returned in
        its place, not raised.
        """
        return self._group_commit.submit_all(batches)

    def _commit_batch(self, batch: Batch) -> list[Outcome]:
        """Commit a group commit's batch; inside its gate, so the turn is this thread's."""
        run = self._send_batch if self.remote else self._run_batch
        return self._retrying(
            run, (batch,), {}, write=True, transaction=False, turn_deadline=self._gate.deadline
        )

    def _compile_batch(self, batch: Batch) -> list[_Compiled]:
        statements: list[_Compiled] = []
        for statement, params in batch:
            prepared = self._prepared.get(statement)
            if prepared is None:
                prepared = self._prepared[statement] = _Prepared.compile(
                    statement, self.engine.dialect
                )
            # A dict is tested first: the ABC's isinstance costs half a microsecond.
            if type(params) is dict or isinstance(params, Mapping):
                statements.append(_Compiled(prepared, [prepared.args(params)], many=False))
            else:
                args = [prepared.args(one) for one in params]
                statements.append(_Compiled(prepared, args, many=True))
        return statements

    def _run_batch(self, pooled: PoolProxiedConnection, batch: Batch) -> list[Outcome]:
        statements = self._compile_batch(batch)
        raw: Any = pooled.dbapi_connection
        # One statement is a transaction of its own in the driver's autocommit
        # mode, and a writing statement takes the write lock before it reads,
        # as BEGIN IMMEDIATE does. That spares a claim or a step result two
        # calls into the driver, each of which gives up and retakes the GIL.
        alone = len(statements) == 1 and not statements[0].many
        try:
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
        except self._driver_error as exc:
            raise sa.exc.DBAPIError.instance(None, None, exc, self._driver_error) from exc
        return outcomes

    def _send_batch(self, pooled: PoolProxiedConnection, batch: Batch) -> list[Outcome]:
        statements = self._compile_batch(batch)
        raw: Any = pooled.dbapi_connection
        try:
            results = iter(
                raw.execute_transaction(
                    [
                        (statement.prepared.sql, args)
                        for statement in statements
                        for args in statement.args
                    ]
                )
            )
        except hrana_dbapi.Error as exc:
            if exc.connection_lost:
                pooled.invalidate()
            raise sa.exc.DBAPIError.instance(
                None, None, exc, hrana_dbapi.Error, connection_invalidated=exc.connection_lost
            ) from exc
        outcomes = []
        for statement in statements:
            if statement.many:
                count = sum(next(results).affected_row_count for _ in statement.args)
                outcomes.append(Outcome(count))
            else:
                result = next(results)
                rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
                outcomes.append(Outcome(result.affected_row_count, rows))
        return outcomes

    def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in a read transaction (one consistent snapshot)."""
        return self._retrying(fn, args, kwargs, write=False)

    def _retrying(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        write: bool,
        transaction: bool = True,
        turn_deadline: float | None = None,
    ) -> T:
        """``fn`` once, and again while the database is locked, up to the lock timeout.

        A write takes the write lock and the turn at the file first, unless
        the caller holds them already: then ``turn_deadline`` is when the
        lock timeout it took them with runs out. Either way, the turn is not
        held while it sleeps before trying again.
        """
        deadline = time.monotonic() + self.lock_timeout if turn_deadline is None else turn_deadline
        backoff = _FIRST_BACKOFF
        reopened = False
        while True:
            try:
                if write:
                    if turn_deadline is not None:
                        result = self._run_once(
                            fn, args, kwargs, write=True, transaction=transaction
                        )
                    else:
                        self._take_turn(deadline)
                        try:
                            result = self._run_once(
                                fn, args, kwargs, write=True, transaction=transaction
                            )
                        finally:
                            self._end_turn()
                    self.count_write()
                    return result
                return self._run_once(fn, args, kwargs, write=False, transaction=transaction)
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                if isinstance(getattr(exc, "orig", None), TransactionLost) and not reopened:
                    # The server dropped the stream and rolled the whole
                    # transaction back; nothing of it was kept, so run it again.
                    reopened = True
                    continue
                if is_readonly_error(exc) and not reopened:
                    # SQLite silently opens a file it may not write read-only,
                    # and the pool would keep such connections after the fault
                    # clears. Drop them all and try once more on a fresh one.
                    reopened = True
                    self.engine.dispose()
                    continue
                if not is_locked_error(exc):
                    raise translate(exc) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._still_locked() from exc
                if turn_deadline is not None:
                    # The turn is given back while this write sleeps, as it is
                    # between two writes: a process stopped here (SIGSTOP, a
                    # debugger) must not keep durably's other processes out.
                    self._turns.release()
                time.sleep(min(remaining, backoff * (0.5 + random.random())))
                backoff = min(backoff * 2, _MAX_BACKOFF)
                if turn_deadline is not None:
                    self._turns.acquire(deadline)  # or, if it does not come in time, without

    def _take_turn(self, deadline: float) -> None:
        """This process's write lock, then its turn at the file (see :mod:`durably.write_turns`).

        A turn that does not come in time (``WriteTurns.acquire``) is done
        without: SQLite's own lock still keeps the write apart from others,
        and :meth:`_retrying` waits that out up to ``deadline``.
        """
        self._write_lock.acquire()
        try:
            self._turns.acquire(deadline)
        except BaseException:
            self._write_lock.release()
            raise

    def _end_turn(self) -> None:
        self._turns.release()
        self._write_lock.release()

    def _still_locked(self) -> DatabaseLockedError:
        return DatabaseLockedError(
            f"The database stayed locked for more than {self.lock_timeout:g}s "
            "(another process holds a write transaction)"
        )

    def _run_once(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        write: bool,
        transaction: bool = True,
    ) -> T:
        """``fn(conn, ...)`` inside a transaction.

        Without ``transaction``, ``fn`` brings its own and gets the pool's
        connection to the driver itself: no SQLAlchemy ``Connection`` is
        built around it (that costs as much as the statements of a step).
        """
        if not transaction:
            if write:
                return self._on_writer(fn, args, kwargs)
            pooled = self._checkout()
            try:
                return fn(pooled, *args, **kwargs)
            finally:
                pooled.close()
        with self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(durably_write=True)
            with conn.begin():
                return fn(conn, *args, **kwargs)

    def _checkout(self) -> PoolProxiedConnection:
        try:
            return self.engine.raw_connection()
        except self._driver_error as exc:  # the pool hands connect errors on unwrapped
            raise sa.exc.DBAPIError.instance(
                None, None, exc, self._driver_error, connection_invalidated=True
            ) from exc

    def _on_writer(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """``fn(writer, ...)`` on the connection write batches share; the write lock is held.

        Checking a connection out of SQLAlchemy's pool and back in costs
        more Python than a step's statement, and a run makes five write
        batches. They all run under the write lock, one at a time, so one
        connection can serve them all: it stays checked out between them
        (measured on W2: a run took about 20% less CPU).

        On a local file it waits for no lock in the driver
        (``_WRITER_BUSY_TIMEOUT_MS``), and gets the pool's setting back when
        it returns there, so your transactions on ``durably.engine`` still wait. It goes back to the pool
        after any error but a refused lock, so the pool resets it and the
        retry gets a fresh checkout, and every ``_WRITER_TURNOVER`` seconds,
        so the pool's checkout events and recycling still reach it.
        (A file made read-only after it was opened is another matter: SQLite
        hands a new connection the descriptor of one closed while others of
        the process were open, so only closing every connection, as
        :meth:`dispose` does, lets such a change reach the process.)
        """
        writer = self._writer
        if writer is not None and time.monotonic() - self._writer_since > _WRITER_TURNOVER:
            self._release_writer()
            writer = None
        if writer is None:
            writer = self._checkout()
            if self._busy_ms is not None:
                try:
                    _set_busy_timeout(writer, _WRITER_BUSY_TIMEOUT_MS)
                except self._driver_error as exc:
                    writer.invalidate()
                    raise sa.exc.DBAPIError.instance(None, None, exc, self._driver_error) from exc
            self._writer = writer
            self._writer_since = time.monotonic()
        try:
            return fn(writer, *args, **kwargs)
        except BaseException as exc:
            # A refused lock leaves the connection as it was (the batch rolled
            # back what it began): keep it, as contended writers meet this often.
            if not is_locked_error(exc):
                self._release_writer()
            raise

    def _release_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self._busy_ms is not None and writer.is_valid:
            try:
                _set_busy_timeout(writer, self._busy_ms)
            except self._driver_error:
                writer.invalidate()  # never back in the pool without its wait
                return
        writer.close()

    def check_caller_connection(self, connection: Connection) -> None:
        """Refuse a caller's connection that opens durably's file through another copy of SQLite.

        Python's ``sqlite3`` and libSQL each carry their own SQLite, and two
        copies in one process do not see each other's file locks (POSIX locks
        belong to the process): when a connection of one closes as "the last",
        it removes the write-ahead log a connection of the other still reads,
        and writes get lost.
        """
        theirs = connection.engine.url
        if self.remote or connection.engine is self.engine or theirs.host:
            return
        mine, other = (
            _SQLITE_LIBRARY.get(self.driver),
            _SQLITE_LIBRARY.get(theirs.get_driver_name()),
        )
        if mine is None or other is None or mine == other:
            return
        if not theirs.database or not self.url.database:
            return
        if os.path.realpath(theirs.database) != os.path.realpath(self.url.database):
            return
        raise ValidationError(
            f"This connection opens {theirs.database!r} through {other}, and durably opens it "
            f"through {mine}: two copies of SQLite in one process do not see each other's "
            "locks and can lose writes. Use durably.engine, or the same URL as durably."
        )

    def count_write(self) -> None:
        """Count a committed write: durably's own, or a caller's transaction that carried a
        trigger. A replica read after it syncs first (read-your-writes)."""
        with self._count_lock:
            self.writes += 1
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    def remote_address(self) -> tuple[str, str | None]:
        """The server's ``http(s)://`` address and auth token, as libSQL's own client takes them."""
        if not self.remote:
            raise ValidationError(f"{display_url(self.url)} is a local file, not a libSQL server")
        args, options = self.engine.dialect.create_connect_args(self.url)
        return str(args[0]), self._auth_token or options.get("auth_token")

    # -- maintenance --------------------------------------------------------

    def journal_mode(self) -> str:
        """The file's journal mode; ``"remote"`` for a libSQL server, whose files are its own."""
        if self.remote:
            return "remote"
        with self.engine.connect() as conn:
            value = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            conn.rollback()
        return str(value).lower()

    def checkpoint_wal(self) -> tuple[int, int, int] | None:
        """``PRAGMA wal_checkpoint(TRUNCATE)``: keeps the WAL file from growing forever.

        Returns ``(busy, log_frames, checkpointed_frames)``, or None when the
        database is not in WAL mode or is remote.
        """
        if self.remote:
            return None
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            conn.rollback()
        if row is None or row[1] == -1:
            return None
        return (int(row[0]), int(row[1]), int(row[2]))

    def _connect_checkpointer(self) -> Any:
        """The checkpointer's own driver connection, outside the pool (:mod:`durably.checkpointer`)."""
        args, options = self.engine.dialect.create_connect_args(self.url)
        options["isolation_level"] = None
        return self.engine.dialect.connect(*args, **options)

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._write_lock:
            self._release_writer()
            self._turns.close()
        self.engine.dispose()
