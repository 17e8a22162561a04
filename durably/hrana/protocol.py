"""Hrana 3 over HTTP, JSON encoding: values, statement results, and the HTTP transport.

Only what a SQL driver needs is here: ``POST /v3/pipeline`` with ``execute``,
``batch`` and ``close`` requests (spec: ``docs/HRANA_3_SPEC.md`` in
tursodatabase/libsql). Each pipeline is one HTTP request on a keep-alive
connection; ``http.client`` releases the GIL while it waits, so other
threads and the event loop keep running during a round trip.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import math
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import (
    AuthenticationError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

JsonObj = dict[str, Any]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

PIPELINE_PATH = "/v3/pipeline"


# -- values ---------------------------------------------------------------------------------


def encode_value(value: object) -> JsonObj:
    """A Python parameter as a Hrana ``Value``; integers travel as exact decimal strings."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "integer", "value": "1" if value else "0"}
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise DataError(f"integer {value} does not fit in SQLite's 64 bits", executed=False)
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{value!r} cannot be sent to a libSQL server", executed=False)
        return {"type": "float", "value": value}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        encoded = base64.b64encode(bytes(value)).decode("ascii").rstrip("=")
        return {"type": "blob", "base64": encoded}
    raise ProgrammingError(
        f"unsupported parameter type {type(value).__name__}; use None, int, float, str or bytes",
        executed=False,
    )


def decode_value(value: JsonObj) -> object:
    kind = value.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        return float(value["value"])
    if kind == "text":
        return str(value["value"])
    if kind == "blob":
        data = str(value["base64"])
        return base64.b64decode(data + "=" * (-len(data) % 4))
    raise InterfaceError(f"the server sent a value of unknown type {kind!r}")


def statement(sql: str, args: Sequence[object] = ()) -> JsonObj:
    return {"sql": sql, "args": [encode_value(arg) for arg in args], "want_rows": True}


@dataclass
class StatementResult:
    columns: list[str]
    rows: list[tuple[object, ...]]
    affected_row_count: int
    last_insert_rowid: int | None

    @classmethod
    def from_json(cls, result: JsonObj) -> StatementResult:
        rowid = result.get("last_insert_rowid")
        return cls(
            columns=[str(col.get("name") or "") for col in result.get("cols", ())],
            rows=[tuple(decode_value(v) for v in row) for row in result.get("rows", ())],
            affected_row_count=int(result.get("affected_row_count") or 0),
            last_insert_rowid=None if rowid is None else int(rowid),
        )


# -- errors ---------------------------------------------------------------------------------

_CODE_CLASSES: dict[str, type[DatabaseError]] = {
    "SQLITE_CONSTRAINT": IntegrityError,
    "SQLITE_BUSY": OperationalError,
    "SQLITE_LOCKED": OperationalError,
    "SQLITE_READONLY": OperationalError,
    "SQLITE_IOERR": OperationalError,
    "SQLITE_CANTOPEN": OperationalError,
    "SQLITE_FULL": OperationalError,
    "SQLITE_CORRUPT": OperationalError,
    "SQLITE_NOTADB": OperationalError,
    "SQLITE_TOOBIG": DataError,
    "SQLITE_MISMATCH": DataError,
    "SQLITE_RANGE": ProgrammingError,
    "SQL_PARSE_ERROR": ProgrammingError,
    "SQL_INPUT_ERROR": ProgrammingError,
    "SQL_NO_STATEMENT": ProgrammingError,
    "SQL_MANY_STATEMENTS": ProgrammingError,
    "ARGS_INVALID": ProgrammingError,
    "ARGS_BOTH_POSITIONAL_AND_NAMED": ProgrammingError,
}


def statement_error(error: JsonObj) -> DatabaseError:
    """A Hrana ``Error`` returned for a statement, as the matching DBAPI exception.

    The message keeps SQLite's own text ("UNIQUE constraint failed: …",
    "database is locked") and appends the code, so callers can match either.
    """
    code = error.get("code")
    message = str(error.get("message") or "unknown error")
    cls = _CODE_CLASSES.get(str(code), OperationalError if code else DatabaseError)
    if code == "SQLITE_UNKNOWN" and "no such" in message:
        cls = OperationalError  # "no such table/column", as the sqlite3 module reports it
    text = f"{message} [{code}]" if code else message
    return cls(text, code=None if code is None else str(code), executed=True)


# -- transport ------------------------------------------------------------------------------


class StreamGone(OperationalError):
    """The server no longer knows the stream (expired, restarted, or a bad baton).

    Raised before the server ran anything from the request.
    """


class Transport:
    """One keep-alive HTTP(S) connection to a libSQL server, used by one thread at a time."""

    def __init__(self, base_url: str, *, auth_token: str | None, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InterfaceError(f"not an http(s) URL: {base_url!r}", executed=False)
        self.base_url = base_url
        self._secure = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if auth_token:
            self._headers["Authorization"] = f"Bearer {auth_token}"
        self._connection: http.client.HTTPConnection | None = None
        self._requests_on_connection = 0
        self.last_used = 0.0

    def _open(self) -> http.client.HTTPConnection:
        if self._secure:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=_tls_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def post(self, path: str, body: JsonObj, *, replayable: bool) -> JsonObj:
        """POST ``body`` as JSON and return the decoded JSON answer.

        A keep-alive connection the server closed while idle fails on first
        use; the request is then sent once more on a new connection, but
        only when ``replayable`` (sending it twice cannot apply anything
        twice).
        """
        payload = json.dumps(body, separators=(",", ":")).encode()
        reused = self._connection is not None and self._requests_on_connection > 0
        try:
            return self._post_once(path, payload)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not (reused and replayable):
                raise
        return self._post_once(path, payload)

    def _post_once(self, path: str, payload: bytes) -> JsonObj:
        if self._connection is None:
            self._connection = self._open()
            self._requests_on_connection = 0
            try:
                self._connection.connect()
            except (OSError, ssl.SSLError) as exc:
                self.close()
                raise OperationalError(
                    f"cannot reach the libSQL server at {self.base_url}: {_describe(exc)}",
                    executed=False,
                    connection_lost=True,
                ) from exc
        connection = self._connection
        try:
            connection.request("POST", self._prefix + path, payload, self._headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise OperationalError(
                f"lost the connection to the libSQL server at {self.base_url}: {_describe(exc)}",
                executed=None,
                connection_lost=True,
            ) from exc
        self._requests_on_connection += 1
        self.last_used = time.monotonic()
        if response.will_close:
            self.close()
        if response.status == 200:
            try:
                decoded: JsonObj = json.loads(data)
            except ValueError as exc:
                raise InterfaceError(
                    f"the server at {self.base_url} answered with invalid JSON", executed=None
                ) from exc
            return decoded
        raise self._http_error(response.status, data)

    def _http_error(self, status: int, data: bytes) -> Error:
        text = data.decode("utf-8", "replace").strip()
        try:
            details = json.loads(text)
        except ValueError:
            details = None
        message = text
        code = None
        if isinstance(details, dict):
            message = str(details.get("message") or details.get("error") or text)
            code = details.get("code")
        if status in (401, 403):
            return AuthenticationError(
                f"the libSQL server at {self.base_url} refused the auth token "
                f"(HTTP {status}): {message}",
                executed=False,
            )
        if code == "STREAM_EXPIRED" or (status == 400 and "baton" in message.lower()):
            return StreamGone(
                f"the libSQL server dropped the stream: {message}", code=code, executed=False
            )
        if status == 404:
            return OperationalError(
                f"{self.base_url} does not serve Hrana over HTTP ({self._prefix + PIPELINE_PATH} "
                "answered 404); is this a libSQL server URL?",
                executed=False,
            )
        return OperationalError(
            f"the libSQL server at {self.base_url} answered HTTP {status}: {message[:500]}",
            code=code,
            executed=None if status >= 500 else False,
        )


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One context for every connection: loading the CA store costs milliseconds."""
    return ssl.create_default_context()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
