"""A PEP 249 driver for remote libSQL servers, over Hrana 3 pipelines.

One :class:`Connection` is one Hrana *stream* on the server: the server keeps
an SQLite connection for it, so a transaction opened on the stream stays
open across requests. Three rules keep that safe over HTTP:

* **A transaction starts in the same request as its first statement.**
  ``BEGIN`` is held back and sent as step 1 of a ``batch`` whose step 2 (the
  statement) runs only if step 1 succeeded. A failed ``BEGIN IMMEDIATE`` can
  therefore never let the statement run outside a transaction, and a write
  transaction costs no extra round trip.
* **The server says whether a transaction is open.** Every pipeline ends
  with a ``get_autocommit`` request, so the driver's idea of "in a
  transaction" is the server's, also after an error.
* **A stream is replaced only between transactions.** The server drops a
  stream after 10 s idle (sqld) or when it restarts; it then rolls back what
  the stream had open. When no transaction is open the driver silently
  continues on a fresh stream. Inside a transaction it raises
  :class:`OperationalError` instead: the transaction's earlier statements are
  gone, and carrying on without them would be wrong.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .exceptions import (
    AuthenticationError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from .protocol import (
    PIPELINE_PATH,
    JsonObj,
    StatementResult,
    StreamGone,
    Transport,
    statement,
    statement_error,
)

__all__ = [
    "AuthenticationError",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "TransactionLost",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "sqlite_version_info",
    "threadsafety",
]

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
sqlite_version_info = (3, 35, 0)
"""The oldest server SQLite durably accepts (``RETURNING``); the dialect checks the real one."""

DEFAULT_TIMEOUT = 15.0
"""Seconds to wait for the server to answer one request."""
DEFAULT_STREAM_IDLE = 5.0
"""Seconds after which an idle stream is not reused (sqld expires streams after 10 s idle)."""

_BEGIN = re.compile(
    r"^\s*BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?\s*$", re.I
)
_COMMIT = re.compile(r"^\s*(COMMIT|END)(\s+TRANSACTION)?\s*;?\s*$", re.I)
_ROLLBACK = re.compile(r"^\s*ROLLBACK(\s+TRANSACTION)?\s*;?\s*$", re.I)

_EMPTY = StatementResult(columns=[], rows=[], affected_row_count=0, last_insert_rowid=None)
_GET_AUTOCOMMIT: JsonObj = {"type": "get_autocommit"}


def connect(
    url: str,
    *,
    auth_token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    stream_idle: float = DEFAULT_STREAM_IDLE,
) -> Connection:
    """Open a connection to the libSQL server at ``url`` (``http://`` or ``https://``).

    Nothing is sent until the first statement.
    """
    return Connection(url, auth_token=auth_token, timeout=timeout, stream_idle=stream_idle)


class TransactionLost(OperationalError):
    """The server dropped the stream while a transaction was open, and rolled it back.

    Nothing of the transaction was kept, so running it again from the start is safe.
    """


class Connection:
    def __init__(
        self, url: str, *, auth_token: str | None, timeout: float, stream_idle: float
    ) -> None:
        self._transport = Transport(url, auth_token=auth_token, timeout=timeout)
        self._stream_idle = stream_idle
        self._baton: str | None = None
        self._pending_begin: str | None = None
        self._in_transaction = False
        self._closed = False

    # -- PEP 249 ------------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        self._check_open()
        if self._pending_begin is not None:
            self._pending_begin = None  # nothing ran inside it
            return
        if self._in_transaction:
            self._run([{"type": "execute", "stmt": statement("COMMIT")}], replayable=False)

    def rollback(self) -> None:
        self._check_open()
        self._pending_begin = None
        if not self._in_transaction:
            return
        try:
            self._run([{"type": "execute", "stmt": statement("ROLLBACK")}], replayable=False)
        except Error as exc:
            # A stream the server dropped (or we cannot reach) is rolled back
            # by the server when it expires; only an answered failure counts.
            if not (isinstance(exc, StreamGone) or exc.connection_lost):
                raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        baton, self._baton = self._baton, None
        try:
            if baton is not None and self._transport.connected:
                # Tells the server to free the stream now instead of at expiry
                # (and to roll back whatever it still had open). Only over a
                # connection that is already open: closing must not wait for
                # an unreachable server; the stream expires there anyway.
                self._transport.post(
                    PIPELINE_PATH,
                    {"baton": baton, "requests": [{"type": "close"}]},
                    replayable=True,
                )
        except Error:
            pass
        finally:
            self._transport.close()

    # -- for SQLAlchemy -----------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction or self._pending_begin is not None

    # -- running statements -------------------------------------------------------------------

    def execute(self, sql: str, args: Sequence[object]) -> StatementResult:
        self._check_open()
        if _BEGIN.match(sql):
            if self.in_transaction:
                raise OperationalError(
                    "cannot start a transaction within a transaction", executed=False
                )
            self._pending_begin = sql
            return _EMPTY
        if _COMMIT.match(sql):
            self.commit()
            return _EMPTY
        if _ROLLBACK.match(sql):
            self.rollback()
            return _EMPTY
        return self.execute_many(sql, [args])[-1]

    def execute_many(
        self, sql: str, seq_of_args: Sequence[Sequence[object]]
    ) -> list[StatementResult]:
        """Run ``sql`` once per argument list, in one request; stop at the first error.

        A held-back ``BEGIN`` goes first in the same batch.
        """
        steps: list[JsonObj] = []
        begin = self._pending_begin
        if begin is not None:
            steps.append({"stmt": statement(begin)})
        for args in seq_of_args:
            step: JsonObj = {"stmt": statement(sql, args)}
            if steps:
                step["condition"] = {"type": "ok", "step": len(steps) - 1}
            steps.append(step)
        if len(steps) == 1:
            request: JsonObj = {"type": "execute", "stmt": steps[0]["stmt"]}
            (response,) = self._run([request], replayable=False)
            return [StatementResult.from_json(response["result"])]
        # A batch that opens a transaction commits nothing, so it may be resent.
        (response,) = self._run(
            [{"type": "batch", "batch": {"steps": steps}}], replayable=begin is not None
        )
        self._pending_begin = None
        step_results = response["result"]["step_results"]
        for error in response["result"]["step_errors"]:
            if error is not None:
                raise statement_error(error)
        first = 1 if begin is not None else 0
        return [StatementResult.from_json(result) for result in step_results[first:]]

    def execute_transaction(
        self, statements: Sequence[tuple[str, Sequence[object]]], *, begin: str = "BEGIN IMMEDIATE"
    ) -> list[StatementResult]:
        """Run ``statements`` as one transaction in one request: all of them, or none.

        The server gets ``BEGIN``, the statements, ``COMMIT`` as one batch,
        each step conditioned on the one before, and a ``ROLLBACK`` that runs
        only if something failed. A client that dies mid-request therefore
        leaves no transaction open on the server, and the transaction costs
        one round trip.
        """
        self._check_open()
        if self.in_transaction:
            raise ProgrammingError("a transaction is already open", executed=False)
        steps: list[JsonObj] = [{"stmt": statement(begin)}]
        for sql, args in [*statements, ("COMMIT", ())]:
            steps.append(
                {"stmt": statement(sql, args), "condition": {"type": "ok", "step": len(steps) - 1}}
            )
        commit_step = len(steps) - 1
        steps.append(
            {
                "stmt": statement("ROLLBACK"),
                "condition": {
                    "type": "and",
                    "conds": [
                        {"type": "ok", "step": 0},
                        {"type": "not", "cond": {"type": "ok", "step": commit_step}},
                    ],
                },
            }
        )
        (response,) = self._run([{"type": "batch", "batch": {"steps": steps}}], replayable=False)
        step_results = response["result"]["step_results"]
        for error in response["result"]["step_errors"][: commit_step + 1]:
            if error is not None:
                raise statement_error(error)
        return [StatementResult.from_json(result) for result in step_results[1:commit_step]]

    def _run(self, requests: list[JsonObj], *, replayable: bool) -> list[JsonObj]:
        """Send ``requests`` on this connection's stream; return their responses.

        Raises the first statement error among them, after the transaction
        state has been updated from the server's answer.
        """
        if (
            self._baton is not None
            and not self._in_transaction
            and time.monotonic() - self._transport.last_used > self._stream_idle
        ):
            self._baton = None  # likely expired on the server; start a new stream
        try:
            results = self._send(requests, replayable=replayable)
        except StreamGone:
            if self._in_transaction:
                self._lose_stream()
                raise TransactionLost(
                    "the libSQL server dropped this connection's stream (idle too long, or "
                    "restarted); the open transaction was rolled back",
                    executed=False,
                ) from None
            self._baton = None  # the server ran nothing; start a new stream
            results = self._send(requests, replayable=replayable)
        first_error: DatabaseError | None = None
        responses: list[JsonObj] = []
        for result in results[:-1]:
            if result.get("type") == "error":
                first_error = first_error or statement_error(result["error"])
                responses.append({})
            else:
                responses.append(result["response"])
        autocommit = results[-1]
        if autocommit.get("type") == "ok":
            self._in_transaction = not autocommit["response"]["is_autocommit"]
        if first_error is not None:
            raise first_error
        return responses

    def _send(self, requests: list[JsonObj], *, replayable: bool) -> list[JsonObj]:
        body = {"baton": self._baton, "requests": [*requests, _GET_AUTOCOMMIT]}
        try:
            answer = self._transport.post(PIPELINE_PATH, body, replayable=replayable)
        except StreamGone:
            raise
        except Error as exc:
            if exc.connection_lost or exc.executed is None:
                self._lose_stream()
            raise
        except OSError as exc:  # a reset on a connection that could not be resent
            self._lose_stream()
            raise OperationalError(
                f"lost the connection to the libSQL server at {self._transport.base_url}: {exc}",
                executed=None,
                connection_lost=True,
            ) from exc
        self._baton = answer.get("baton")
        if answer.get("base_url"):
            # The server asks for this stream's further requests at another
            # address; durably's servers (sqld, Turso) do not do this today.
            self._lose_stream()
            raise NotSupportedError(
                "the libSQL server redirected the stream (base_url), which this driver "
                "does not follow",
                executed=None,
            )
        results: list[JsonObj] = answer["results"]
        if len(results) != len(requests) + 1:
            raise InterfaceError("the server answered a different number of requests")
        return results

    def _lose_stream(self) -> None:
        self._baton = None
        self._pending_begin = None
        self._in_transaction = False

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed", executed=False)


class Cursor:
    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: tuple[tuple[str, None, None, None, None, None, None], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[object, ...]] = []
        self._position = 0

    def execute(self, sql: str, parameters: Sequence[object] | Mapping[str, object] = ()) -> Cursor:
        result = self.connection.execute(sql, _positional(parameters))
        self._load(result)
        return self

    def executemany(
        self, sql: str, seq_of_parameters: Sequence[Sequence[object] | Mapping[str, object]]
    ) -> Cursor:
        all_args = [_positional(p) for p in seq_of_parameters]
        results = self.connection.execute_many(sql, all_args) if all_args else []
        self.description = None
        self._rows = []
        self._position = 0
        self.rowcount = sum(r.affected_row_count for r in results)
        self.lastrowid = results[-1].last_insert_rowid if results else None
        return self

    def _load(self, result: StatementResult) -> None:
        self.description = (
            tuple((name, None, None, None, None, None, None) for name in result.columns)
            if result.columns
            else None
        )
        self._rows = result.rows
        self._position = 0
        self.rowcount = result.affected_row_count if result.columns == [] else -1
        if result.columns and result.affected_row_count:
            self.rowcount = result.affected_row_count  # UPDATE … RETURNING
        self.lastrowid = result.last_insert_rowid

    def fetchone(self) -> tuple[object, ...] | None:
        if self._position >= len(self._rows):
            return None
        row = self._rows[self._position]
        self._position += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[object, ...]]:
        count = self.arraysize if size is None else size
        rows = self._rows[self._position : self._position + count]
        self._position += len(rows)
        return rows

    def fetchall(self) -> list[tuple[object, ...]]:
        rows = self._rows[self._position :]
        self._position = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass


def _positional(parameters: Sequence[object] | Mapping[str, object]) -> Sequence[object]:
    if isinstance(parameters, Mapping):
        raise ProgrammingError(
            "named parameters are not supported; this driver uses qmark (?) placeholders",
            executed=False,
        )
    return parameters
