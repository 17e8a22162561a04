"""A small libSQL remote server speaking Hrana 2/3 over HTTP (JSON), for tests only.

Run it as a separate process (the stock libsql client keeps the GIL while it waits on the
network, so a server in the same interpreter deadlocks)::

    python -m tests.hrana.server --db PATH --port 0 [--auth-token TOKEN] [--stream-expiry 10]

It prints ``listening HOST:PORT`` on stdout and serves until SIGTERM/SIGINT.

Behaviour follows the public Hrana 3 specification (``docs/HRANA_3_SPEC.md`` in
tursodatabase/libsql) and, where the spec leaves room, what sqld (``libsql-server``) does. See
README.md next to this file for what is and is not implemented.

Only the standard library is used. SQL runs through ``ctypes`` on the very libsqlite3 that
Python's own ``sqlite3`` module is linked against: the stdlib module does not expose what Hrana
needs (declared column types, parameter names, read-only/explain flags, error offsets,
``sqlite3_get_autocommit``), and foreign calls release the GIL, so streams run concurrently.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import json
import math
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

from tests.hrana.mirror import Mirror, MirroredStatement

JsonObj = dict[str, Any]
SqlValue = None | int | float | str | bytes
MIRROR: Mirror | None = None
"""Set by --mirror URL: every committed write is replayed there (tests/hrana/mirror.py)."""

# --------------------------------------------------------------------------------------------
# libsqlite3 through ctypes
# --------------------------------------------------------------------------------------------

SQLITE_OK = 0
SQLITE_ROW = 100
SQLITE_DONE = 101
SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL = 1, 2, 3, 4, 5
SQLITE_OPEN_READWRITE = 0x2
SQLITE_OPEN_CREATE = 0x4
SQLITE_OPEN_FULLMUTEX = 0x10000
SQLITE_TRANSIENT = ctypes.c_void_p(-1)

# Names of the primary result codes, as sqld reports them in `Error.code` (sqld maps only the
# primary code, so a UNIQUE violation is "SQLITE_CONSTRAINT", not "SQLITE_CONSTRAINT_UNIQUE").
PRIMARY_CODE_NAMES = {
    1: "SQLITE_UNKNOWN",  # SQLITE_ERROR: rusqlite reports it as ErrorCode::Unknown
    2: "SQLITE_INTERNAL",
    3: "SQLITE_PERM",
    4: "SQLITE_ABORT",
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    9: "SQLITE_INTERRUPT",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    12: "SQLITE_NOTFOUND",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
    17: "SQLITE_SCHEMA",
    18: "SQLITE_TOOBIG",
    19: "SQLITE_CONSTRAINT",
    20: "SQLITE_MISMATCH",
    21: "SQLITE_MISUSE",
    22: "SQLITE_NOLFS",
    23: "SQLITE_AUTH",
    25: "SQLITE_RANGE",
    26: "SQLITE_NOTADB",
}


def _load_libsqlite3() -> ctypes.CDLL:
    """The libsqlite3 that Python's `_sqlite3` uses (one library instance, one set of locks)."""
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_libversion_number  # noqa: B018 - resolves through the module's dependencies
        return lib
    except (ImportError, OSError, AttributeError):
        name = ctypes.util.find_library("sqlite3")
        if name is None:
            raise RuntimeError("libsqlite3 not found") from None
        return ctypes.CDLL(name)


_lib = _load_libsqlite3()
_P = ctypes.c_void_p


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    func = getattr(_lib, name)
    func.restype = restype
    func.argtypes = list(argtypes)
    return func


_open_v2 = _fn(
    "sqlite3_open_v2",
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(_P),
    ctypes.c_int,
    ctypes.c_char_p,
)
_close_v2 = _fn("sqlite3_close_v2", ctypes.c_int, _P)
_busy_timeout = _fn("sqlite3_busy_timeout", ctypes.c_int, _P, ctypes.c_int)
_prepare_v2 = _fn(
    "sqlite3_prepare_v2", ctypes.c_int, _P, _P, ctypes.c_int, ctypes.POINTER(_P), ctypes.POINTER(_P)
)
_step = _fn("sqlite3_step", ctypes.c_int, _P)
_finalize = _fn("sqlite3_finalize", ctypes.c_int, _P)
_column_count = _fn("sqlite3_column_count", ctypes.c_int, _P)
_column_name = _fn("sqlite3_column_name", ctypes.c_char_p, _P, ctypes.c_int)
_column_decltype = _fn("sqlite3_column_decltype", ctypes.c_char_p, _P, ctypes.c_int)
_column_type = _fn("sqlite3_column_type", ctypes.c_int, _P, ctypes.c_int)
_column_int64 = _fn("sqlite3_column_int64", ctypes.c_int64, _P, ctypes.c_int)
_column_double = _fn("sqlite3_column_double", ctypes.c_double, _P, ctypes.c_int)
_column_text = _fn("sqlite3_column_text", _P, _P, ctypes.c_int)
_column_blob = _fn("sqlite3_column_blob", _P, _P, ctypes.c_int)
_column_bytes = _fn("sqlite3_column_bytes", ctypes.c_int, _P, ctypes.c_int)
_bind_parameter_count = _fn("sqlite3_bind_parameter_count", ctypes.c_int, _P)
_bind_parameter_name = _fn("sqlite3_bind_parameter_name", ctypes.c_char_p, _P, ctypes.c_int)
_bind_null = _fn("sqlite3_bind_null", ctypes.c_int, _P, ctypes.c_int)
_bind_int64 = _fn("sqlite3_bind_int64", ctypes.c_int, _P, ctypes.c_int, ctypes.c_int64)
_bind_double = _fn("sqlite3_bind_double", ctypes.c_int, _P, ctypes.c_int, ctypes.c_double)
_bind_text = _fn(
    "sqlite3_bind_text", ctypes.c_int, _P, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, _P
)
_bind_blob = _fn(
    "sqlite3_bind_blob", ctypes.c_int, _P, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, _P
)
_errmsg = _fn("sqlite3_errmsg", ctypes.c_char_p, _P)
_errstr = _fn("sqlite3_errstr", ctypes.c_char_p, ctypes.c_int)
_extended_errcode = _fn("sqlite3_extended_errcode", ctypes.c_int, _P)
_changes = _fn("sqlite3_changes", ctypes.c_int, _P)
_last_insert_rowid = _fn("sqlite3_last_insert_rowid", ctypes.c_int64, _P)
_get_autocommit = _fn("sqlite3_get_autocommit", ctypes.c_int, _P)
_stmt_readonly = _fn("sqlite3_stmt_readonly", ctypes.c_int, _P)
_stmt_isexplain = _fn("sqlite3_stmt_isexplain", ctypes.c_int, _P)
_complete = _fn("sqlite3_complete", ctypes.c_int, ctypes.c_char_p)
try:  # SQLite >= 3.38
    _error_offset: Any = _fn("sqlite3_error_offset", ctypes.c_int, _P)
except AttributeError:
    _error_offset = None


class SqliteError(Exception):
    """A failed SQLite call: `code` is the extended result code."""

    def __init__(self, code: int, message: str, offset: int = -1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset

    @property
    def primary_name(self) -> str:
        return PRIMARY_CODE_NAMES.get(self.code & 0xFF, "SQLITE_UNKNOWN")


class Statement:
    """A prepared statement (`sqlite3_stmt *`)."""

    def __init__(self, conn: Connection, handle: int) -> None:
        self.conn = conn
        self.handle = handle

    def columns(self) -> list[tuple[str, str | None]]:
        out = []
        for i in range(_column_count(self.handle)):
            name = _column_name(self.handle, i)
            decl = _column_decltype(self.handle, i)
            out.append((name.decode() if name else "", decl.decode() if decl else None))
        return out

    def param_names(self) -> list[str | None]:
        names: list[str | None] = []
        for i in range(1, _bind_parameter_count(self.handle) + 1):
            name = _bind_parameter_name(self.handle, i)
            names.append(name.decode() if name else None)
        return names

    @property
    def readonly(self) -> bool:
        return bool(_stmt_readonly(self.handle))

    @property
    def is_explain(self) -> bool:
        return bool(_stmt_isexplain(self.handle))

    def bind(self, index: int, value: SqlValue) -> None:
        if value is None:
            rc = _bind_null(self.handle, index)
        elif isinstance(value, int):
            rc = _bind_int64(self.handle, index, value)
        elif isinstance(value, float):
            rc = _bind_double(self.handle, index, value)
        elif isinstance(value, str):
            data = value.encode()
            rc = _bind_text(self.handle, index, data, len(data), SQLITE_TRANSIENT)
        else:
            rc = _bind_blob(self.handle, index, value, len(value), SQLITE_TRANSIENT)
        if rc != SQLITE_OK:
            raise self.conn.error(rc)

    def step(self) -> bool:
        """Advances the statement: True if a row is available, False when done."""
        rc = _step(self.handle)
        if rc == SQLITE_ROW:
            return True
        if rc == SQLITE_DONE:
            return False
        raise self.conn.error(rc)

    def row(self) -> list[SqlValue]:
        values: list[SqlValue] = []
        for i in range(_column_count(self.handle)):
            kind = _column_type(self.handle, i)
            if kind == SQLITE_INTEGER:
                values.append(int(_column_int64(self.handle, i)))
            elif kind == SQLITE_FLOAT:
                values.append(float(_column_double(self.handle, i)))
            elif kind == SQLITE_TEXT:
                ptr = _column_text(self.handle, i)
                size = _column_bytes(self.handle, i)
                values.append(ctypes.string_at(ptr, size).decode() if ptr else "")
            elif kind == SQLITE_BLOB:
                ptr = _column_blob(self.handle, i)
                size = _column_bytes(self.handle, i)
                values.append(ctypes.string_at(ptr, size) if ptr and size else b"")
            else:
                values.append(None)
        return values

    def finalize(self) -> None:
        if self.handle:
            _finalize(self.handle)
            self.handle = 0


class Connection:
    """A database connection (`sqlite3 *`). Not thread-safe by itself: callers serialise."""

    def __init__(self, path: str, busy_timeout_ms: int = 5000) -> None:
        handle = _P()
        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        rc = _open_v2(path.encode(), ctypes.byref(handle), flags, None)
        if rc != SQLITE_OK:
            message = _errmsg(handle).decode() if handle.value else _errstr(rc).decode()
            _close_v2(handle)
            raise SqliteError(rc, message)
        self.handle: int = handle.value or 0
        _busy_timeout(self.handle, busy_timeout_ms)
        self.mirror_pending: list[JsonObj] = []
        """The writes of the open transaction, for --mirror (tests/hrana/mirror.py)."""

    def error(self, rc: int, *, with_offset: bool = False) -> SqliteError:
        message = (_errmsg(self.handle) or b"").decode(errors="replace")
        code = _extended_errcode(self.handle) or rc
        offset = _error_offset(self.handle) if with_offset and _error_offset is not None else -1
        return SqliteError(code, message, offset)

    def prepare(self, sql: str) -> Statement | None:
        """Compiles the first statement of `sql`; None if it holds no statement at all."""
        data = sql.encode()
        buf = ctypes.create_string_buffer(data)
        stmt = _P()
        rc = _prepare_v2(self.handle, buf, len(data), ctypes.byref(stmt), None)
        if rc != SQLITE_OK:
            raise self.error(rc, with_offset=True)
        return Statement(self, stmt.value) if stmt.value else None

    def execute(self, sql: str) -> list[list[SqlValue]]:
        """Runs one statement without parameters (server set-up only)."""
        stmt = self.prepare(sql)
        if stmt is None:
            return []
        try:
            rows = []
            while stmt.step():
                rows.append(stmt.row())
            return rows
        finally:
            stmt.finalize()

    @property
    def is_autocommit(self) -> bool:
        return bool(_get_autocommit(self.handle))

    def changes(self) -> int:
        return int(_changes(self.handle))

    def last_insert_rowid(self) -> int:
        return int(_last_insert_rowid(self.handle))

    def close(self) -> None:
        """Closes the connection; SQLite rolls back any open transaction."""
        if self.handle:
            _close_v2(self.handle)
            self.handle = 0


# --------------------------------------------------------------------------------------------
# Errors, in the three shapes sqld uses
# --------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The client broke the protocol: HTTP 400, plain-text body, and the stream is dropped."""


class StreamExpired(Exception):
    """The baton names a stream that expired: HTTP 500 with a JSON `Error`."""

    message = "The stream has expired due to inactivity"
    code = "STREAM_EXPIRED"


class StmtError(Exception):
    """An error reported inside the protocol (`StreamResultError`, batch step error...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def to_proto(self) -> JsonObj:
        return {"message": self.message, "code": self.code}

    @classmethod
    def from_sqlite(cls, err: SqliteError, *, at_prepare: bool = False) -> StmtError:
        if at_prepare and err.offset >= 0:
            return cls(
                f"SQL input error: {err.message} (at offset {err.offset})", "SQL_INPUT_ERROR"
            )
        return cls(f"SQLite error: {err.message}", err.primary_name)


def parse_error(detail: str) -> StmtError:
    return StmtError(f"SQL string could not be parsed: {detail}", "SQL_PARSE_ERROR")


def json_error(detail: str) -> ProtocolError:
    return ProtocolError(f"Cannot deserialize client message from JSON: {detail}")


BATON_INVALID = "Received an invalid baton"
BATON_REUSED = "Received a baton that has already been used"
BATON_STREAM_CLOSED = "Stream for this baton was closed"

# --------------------------------------------------------------------------------------------
# SQL text analysis: statement splitting and sqld's statement classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # word, qid (quoted identifier), str, num, var, blob, op
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def ident(self) -> str:
        """The identifier this token names (unquoted), or "" if it is not an identifier."""
        if self.kind == "word":
            return self.text
        if self.kind == "qid":
            return self.text[1:-1]
        return ""


class IncompleteSql(Exception):
    pass


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) > 127


def tokenize(sql: str) -> list[Token]:
    """Splits SQL into tokens, dropping whitespace and comments."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch in "'\"`[":
            close = "]" if ch == "[" else ch
            j = i + 1
            while True:
                j = sql.find(close, j)
                if j < 0:
                    raise IncompleteSql("unrecognized token: " + sql[i : i + 20])
                if close != "]" and sql.startswith(close * 2, j):
                    j += 2
                    continue
                break
            tokens.append(Token("str" if ch == "'" else "qid", sql[i : j + 1], i, j + 1))
            i = j + 1
        elif ch in "xX" and sql.startswith("'", i + 1):
            j = sql.find("'", i + 2)
            if j < 0:
                raise IncompleteSql("unrecognized token: " + sql[i : i + 20])
            tokens.append(Token("blob", sql[i : j + 1], i, j + 1))
            i = j + 1
        elif ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                if sql[j] in "eE" and j + 1 < n and sql[j + 1] in "+-":
                    j += 1
                j += 1
            tokens.append(Token("num", sql[i:j], i, j))
            i = j
        elif ch in "?:@$" and (ch == "?" or (i + 1 < n and _is_ident_char(sql[i + 1]))):
            j = i + 1
            while j < n and (_is_ident_char(sql[j]) or (ch != "?" and sql.startswith("::", j))):
                j += 2 if sql.startswith("::", j) else 1
            tokens.append(Token("var", sql[i:j], i, j))
            i = j
        elif _is_ident_char(ch):
            j = i + 1
            while j < n and _is_ident_char(sql[j]):
                j += 1
            tokens.append(Token("word", sql[i:j], i, j))
            i = j
        else:
            tokens.append(Token("op", ch, i, i + 1))
            i += 1
    return tokens


def split_statements(sql: str) -> list[list[Token]]:
    """The statements of `sql` as token lists (a `;` inside CREATE TRIGGER does not split)."""
    tokens = tokenize(sql)
    statements: list[list[Token]] = []
    current: list[Token] = []
    for tok in tokens:
        if tok.kind == "op" and tok.text == ";":
            if not current:
                continue  # an empty statement, as in "SELECT 1;;"
            if _complete(sql[current[0].start : tok.end].encode()):
                statements.append(current)
                current = []
                continue
        current.append(tok)
    if current:
        statements.append(current)
    return statements


def statement_text(sql: str, tokens: list[Token]) -> str:
    return sql[tokens[0].start : tokens[-1].end]


# sqld's `StmtKind::pragma_kind` (libsql-server/src/query_analysis.rs).
PRAGMAS_ALWAYS = {
    "table_list", "index_list", "table_info", "table_xinfo", "index_info", "index_xinfo",
    "pragma_list", "compile_options", "database_list", "function_list", "module_list",
    "encoding", "defer_foreign_keys", "foreign_keys", "foreign_key_list", "foreign_key_check",
    "collation_list", "data_version", "freelist_count", "integrity_check", "legacy_file_format",
    "page_count", "quick_check", "stats", "user_version",
}  # fmt: skip
PRAGMAS_WITHOUT_VALUE = {
    "schema_version", "analysis_limit", "application_id", "auto_vacuum", "automatic_index",
    "busy_timeout", "cache_size", "cache_spill", "cell_size_check", "checkpoint_fullfsync",
    "fullfsync", "hard_heap_limit", "journal_mode", "journal_size_limit", "legacy_alter_table",
    "locking_mode", "max_page_count", "mmap_size", "page_size", "query_only",
    "read_uncommitted", "recursive_triggers", "reverse_unordered_selects", "secure_delete",
    "soft_heap_limit", "synchronous", "temp_store", "threads", "trusted_schema",
    "wal_autocheckpoint",
}  # fmt: skip
READ_PRAGMAS = {
    "table_list", "index_list", "table_info", "table_xinfo", "index_info", "index_xinfo",
    "pragma_list", "compile_options", "database_list", "function_list", "module_list",
    "encoding", "schema_version",
}  # fmt: skip

_RESERVED_TABLES = {"_litestream_seq", "_litestream_lock", "libsql_wasm_func_table"}


def _pragma_kind(tokens: list[Token]) -> str | None:
    """`tokens` follow the PRAGMA keyword."""
    if not tokens:
        return None
    rest = tokens[1:]
    name = tokens[0].ident
    if rest and rest[0].text == "." and len(rest) > 1:
        name, rest = rest[1].ident, rest[2:]
    name = name.lower()
    has_value = bool(rest)
    if name in PRAGMAS_ALWAYS or (name in PRAGMAS_WITHOUT_VALUE and not has_value):
        return "read" if name in READ_PRAGMAS else "write"
    return None


def _table_name(tokens: list[Token]) -> tuple[str, str]:
    """(schema, table) of the qualified name at the start of `tokens`."""
    if len(tokens) >= 3 and tokens[1].text == ".":
        return tokens[0].ident.lower(), tokens[2].ident.lower()
    return "", tokens[0].ident.lower() if tokens else ""


def _main_keyword_after_with(tokens: list[Token]) -> str:
    """The verb of a `WITH ... <verb>` statement: the first top-level verb after the CTEs."""
    depth = 0
    for tok in tokens[1:]:
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif depth == 0 and tok.upper in {
            "SELECT",
            "VALUES",
            "INSERT",
            "REPLACE",
            "UPDATE",
            "DELETE",
        }:
            return tok.upper
    return ""


@dataclass(frozen=True)
class Analysis:
    kind: str  # txn_begin, txn_end, read, write, ddl, savepoint, release
    is_iud: bool
    is_insert: bool


def classify(tokens: list[Token]) -> Analysis | None:
    """sqld's `StmtKind::kind`: None for statements sqld refuses ("unsupported statement")."""
    words = [t.upper for t in tokens]
    first = words[0]
    verb = _main_keyword_after_with(tokens) if first == "WITH" else first
    kind: str | None = None
    if first == "EXPLAIN":
        rest = tokens[1:]
        if len(rest) >= 2 and rest[0].upper == "QUERY" and rest[1].upper == "PLAN":
            kind = "read"
        elif rest and rest[0].upper == "PRAGMA":
            kind = _pragma_kind(rest[1:])
        else:
            kind = "read"
    elif first == "BEGIN":
        kind = "txn_begin"
    elif first in {"COMMIT", "END"}:
        kind = "txn_end"
    elif first == "ROLLBACK":
        kind = "release" if "TO" in words else "txn_end"
    elif first == "SAVEPOINT":
        kind = "savepoint"
    elif first == "RELEASE":
        kind = "release"
    elif first == "CREATE":
        kind = _create_kind(tokens[1:])
    elif first == "DROP":
        target = words[1] if len(words) > 1 else ""
        if target in {"TABLE", "INDEX", "TRIGGER", "VIEW"}:
            kind = "ddl"
            if target == "TABLE":
                name_tokens = tokens[4:] if words[2:4] == ["IF", "EXISTS"] else tokens[2:]
                kind = None if _table_name(name_tokens)[1] in _RESERVED_TABLES else "ddl"
    elif first == "ALTER":
        kind = None if _table_name(tokens[2:])[1] in _RESERVED_TABLES else "ddl"
    elif verb in {"INSERT", "REPLACE", "UPDATE", "DELETE"}:
        kind = "write"
    elif verb in {"SELECT", "VALUES"}:
        kind = "read"
    elif first == "PRAGMA":
        kind = _pragma_kind(tokens[1:])
    elif first == "REINDEX":
        kind = "write"
    # ATTACH/DETACH (sqld: namespaces only), VACUUM, ANALYZE and anything else: refused
    if kind is None:
        return None
    is_iud = verb in {"INSERT", "REPLACE", "UPDATE", "DELETE"}
    return Analysis(kind, is_iud, verb in {"INSERT", "REPLACE"})


def _create_kind(tokens: list[Token]) -> str | None:
    words = [t.upper for t in tokens]
    if not words or words[0] in {"TEMP", "TEMPORARY"}:
        return None  # temporary objects are bound to one connection: sqld refuses them
    if words[0] == "UNIQUE":
        words = words[1:]
    if words[:1] == ["VIRTUAL"] or words[:1] in (["INDEX"], ["TRIGGER"], ["VIEW"]):
        return "ddl"
    if words[:1] == ["TABLE"]:
        rest = tokens[4:] if words[1:4] == ["IF", "NOT", "EXISTS"] else tokens[1:]
        return None if _table_name(rest)[0] == "temp" else "ddl"
    return None


class ScratchPool:
    """In-memory connections on which statements are compiled to tell syntax errors apart.

    sqld parses every statement of a request before running any; SQLite reports a syntax error
    while compiling even against an empty schema, which this pool relies on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Connection] = []

    def syntax_error(self, sql: str) -> str | None:
        with self._lock:
            conn = self._free.pop() if self._free else Connection(":memory:")
        try:
            stmt = conn.prepare(sql)
            if stmt is not None:
                stmt.finalize()
            return None
        except SqliteError as err:
            msg = err.message
            if "syntax error" in msg or "incomplete input" in msg or "unrecognized token" in msg:
                return msg
            return None
        finally:
            with self._lock:
                self._free.append(conn)


SCRATCH = ScratchPool()

# --------------------------------------------------------------------------------------------
# Protocol structures (JSON encoding)
# --------------------------------------------------------------------------------------------

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
REQUEST_TYPES = [
    "close", "execute", "batch", "sequence", "describe", "store_sql", "close_sql",
    "get_autocommit",
]  # fmt: skip
VALUE_TYPES = ["null", "integer", "float", "text", "blob"]
COND_TYPES = ["ok", "error", "not", "and", "or", "is_autocommit"]


def _variant(obj: Any, what: str, allowed: list[str]) -> str:
    if not isinstance(obj, dict):
        raise json_error(f"invalid type: expected internally tagged enum {what}")
    kind = obj.get("type")
    if kind is None:
        raise json_error("missing field `type`")
    if kind not in allowed:
        expected = ", ".join(f"`{a}`" for a in allowed)
        raise json_error(f"unknown variant `{kind}`, expected one of {expected}")
    return str(kind)


def _field(obj: JsonObj, name: str, kinds: tuple[type, ...], *, required: bool = False) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise json_error(f"missing field `{name}`")
        return None
    value = obj[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise json_error(f"invalid type for field `{name}`")
    return value


def decode_value(obj: Any) -> SqlValue:
    kind = _variant(obj, "Value", VALUE_TYPES)
    if kind == "null":
        return None
    if kind == "integer":
        text = _field(obj, "value", (str,), required=True)
        value = int(text) if _INTEGER_RE.fullmatch(text) else None
        if value is None or not I64_MIN <= value <= I64_MAX:
            raise json_error(
                f'invalid value: string "{text}", expected decimal integer as a string'
            )
        return value
    if kind == "float":
        return float(_field(obj, "value", (int, float), required=True))
    if kind == "text":
        return str(_field(obj, "value", (str,), required=True))
    text = _field(obj, "base64", (str,), required=True).rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise json_error(
            f'invalid value: string "{text}", expected binary data encoded as base64'
        ) from None


def encode_value(value: SqlValue) -> JsonObj:
    if value is None:
        return {"type": "null"}
    if isinstance(value, int):
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        # serde_json writes non-finite floats as null
        return {"type": "float", "value": value if math.isfinite(value) else None}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    return {"type": "blob", "base64": base64.b64encode(value).decode().rstrip("=")}


@dataclass
class StmtReq:
    sql: str | None
    sql_id: int | None
    args: list[SqlValue]
    named_args: list[tuple[str, SqlValue]]
    want_rows: bool


def decode_stmt(obj: Any) -> StmtReq:
    if not isinstance(obj, dict):
        raise json_error("invalid type: expected struct Stmt")
    args = _field(obj, "args", (list,)) or []
    named = _field(obj, "named_args", (list,)) or []
    named_args = []
    for arg in named:
        if not isinstance(arg, dict):
            raise json_error("invalid type: expected struct NamedArg")
        name = _field(arg, "name", (str,), required=True)
        if "value" not in arg:
            raise json_error("missing field `value`")
        named_args.append((name, decode_value(arg["value"])))
    want_rows = _field(obj, "want_rows", (bool,))
    return StmtReq(
        sql=_field(obj, "sql", (str,)),
        sql_id=_field(obj, "sql_id", (int,)),
        args=[decode_value(a) for a in args],
        named_args=named_args,
        want_rows=True if want_rows is None else want_rows,
    )


def decode_cond(obj: Any) -> JsonObj:
    kind = _variant(obj, "BatchCond", COND_TYPES)
    if kind in {"ok", "error"}:
        step = _field(obj, "step", (int,), required=True)
        if step < 0:
            raise json_error("invalid value for field `step`")
        return {"type": kind, "step": step}
    if kind == "not":
        if "cond" not in obj:
            raise json_error("missing field `cond`")
        return {"type": kind, "cond": decode_cond(obj["cond"])}
    if kind in {"and", "or"}:
        conds = _field(obj, "conds", (list,), required=True)
        return {"type": kind, "conds": [decode_cond(c) for c in conds]}
    return {"type": kind}


@dataclass
class BatchStepReq:
    condition: JsonObj | None
    stmt: StmtReq


def decode_batch(obj: Any) -> list[BatchStepReq]:
    if not isinstance(obj, dict):
        raise json_error("invalid type: expected struct Batch")
    steps = []
    for step in _field(obj, "steps", (list,), required=True):
        if not isinstance(step, dict):
            raise json_error("invalid type: expected struct BatchStep")
        if "stmt" not in step:
            raise json_error("missing field `stmt`")
        cond = step.get("condition")
        steps.append(
            BatchStepReq(decode_cond(cond) if cond is not None else None, decode_stmt(step["stmt"]))
        )
    return steps


@dataclass
class StreamReq:
    type: str
    stmt: StmtReq | None = None
    batch: list[BatchStepReq] = field(default_factory=list)
    sql: str | None = None
    sql_id: int | None = None


def decode_stream_request(obj: Any) -> StreamReq:
    kind = _variant(obj, "StreamRequest", REQUEST_TYPES)
    if kind == "execute":
        if "stmt" not in obj:
            raise json_error("missing field `stmt`")
        return StreamReq(kind, stmt=decode_stmt(obj["stmt"]))
    if kind == "batch":
        if "batch" not in obj:
            raise json_error("missing field `batch`")
        return StreamReq(kind, batch=decode_batch(obj["batch"]))
    if kind in {"sequence", "describe"}:
        return StreamReq(kind, sql=_field(obj, "sql", (str,)), sql_id=_field(obj, "sql_id", (int,)))
    if kind == "store_sql":
        return StreamReq(
            kind,
            sql=_field(obj, "sql", (str,), required=True),
            sql_id=_field(obj, "sql_id", (int,), required=True),
        )
    if kind == "close_sql":
        return StreamReq(kind, sql_id=_field(obj, "sql_id", (int,), required=True))
    return StreamReq(kind)


def decode_body(raw: bytes) -> JsonObj:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise json_error(str(err)) from None
    if not isinstance(body, dict):
        raise json_error("invalid type: expected a JSON object")
    baton = body.get("baton")
    if baton is not None and not isinstance(baton, str):
        raise json_error("invalid type for field `baton`")
    return body


# --------------------------------------------------------------------------------------------
# Statement execution
# --------------------------------------------------------------------------------------------


@dataclass
class Query:
    sql: str
    analysis: Analysis
    args: list[SqlValue]
    named: dict[str, SqlValue] | None
    want_rows: bool


def resolve_sql(sql: str | None, sql_id: int | None, sqls: dict[int, str]) -> str:
    if sql is not None and sql_id is not None:
        raise ProtocolError("Either `sql` or `sql_id` are required, but not both")
    if sql is not None:
        return sql
    if sql_id is None:
        raise ProtocolError("Either `sql` or `sql_id` are required")
    if sql_id not in sqls:
        raise ProtocolError(f"SQL text {sql_id} not found")
    return sqls[sql_id]


def parse_statements(sql: str) -> list[tuple[str, Analysis]]:
    """Splits and classifies like sqld's `Statement::parse`; raises StmtError SQL_PARSE_ERROR."""
    try:
        statements = split_statements(sql)
    except IncompleteSql as err:
        raise parse_error(str(err)) from None
    out = []
    for tokens in statements:
        text = statement_text(sql, tokens)
        # sqld parses before it classifies: a syntax error is reported as one, even on a
        # statement it would also refuse
        syntax = SCRATCH.syntax_error(text)
        if syntax is not None:
            raise parse_error(syntax)
        analysis = classify(tokens)
        if analysis is None:
            raise parse_error(f"unsupported statement: {sql}")
        out.append((text, analysis))
    return out


def stmt_to_query(stmt: StmtReq, sqls: dict[int, str]) -> Query:
    sql = resolve_sql(stmt.sql, stmt.sql_id, sqls)
    statements = parse_statements(sql)
    if not statements:
        raise StmtError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
    if len(statements) > 1:
        raise StmtError("SQL string contains more than one statement", "SQL_MANY_STATEMENTS")
    if stmt.args and stmt.named_args:
        raise StmtError(
            "Specifying both positional and named arguments is not supported",
            "ARGS_BOTH_POSITIONAL_AND_NAMED",
        )
    text, analysis = statements[0]
    named = dict(stmt.named_args) if stmt.named_args else None
    return Query(text, analysis, list(stmt.args), named, stmt.want_rows)


def args_invalid(detail: str) -> StmtError:
    return StmtError(f"Arguments do not match SQL parameters: {detail}", "ARGS_INVALID")


def bind_params(stmt: Statement, query: Query) -> None:
    """sqld's `Params::bind`: `?NNN` and `?` by position, `:x`/`@x`/`$x` by name."""
    names = stmt.param_names()
    given = len(query.named) if query.named is not None else len(query.args)
    if len(names) < given:
        raise args_invalid(f"too many parameters, expected {len(names)} found {given}")
    for index, name in enumerate(names, start=1):
        found, value = False, None
        if name is not None and name.startswith("?"):
            pos = int(name[1:])
            if query.named is None and 0 < pos <= len(query.args):
                found, value = True, query.args[pos - 1]
        elif name is not None:
            if query.named is not None:
                for key in (name, name[1:]):
                    if key in query.named:
                        found, value = True, query.named[key]
                        break
        elif query.named is None and index <= len(query.args):
            found, value = True, query.args[index - 1]
        if not found:
            if stmt.is_explain:
                return
            raise args_invalid(f"value for parameter {name or index} not found")
        try:
            stmt.bind(index, value)
        except SqliteError as err:
            raise args_invalid(err.message) from None


class StepSink:
    """Receives the outcome of batch steps (a batch result, or cursor entries)."""

    def skipped(self, step: int) -> None:
        pass

    def begin(self, step: int, cols: list[tuple[str, str | None]]) -> None:
        raise NotImplementedError

    def row(self, values: list[SqlValue]) -> None:
        raise NotImplementedError

    def end(self, affected: int, last_rowid: int | None, stats: tuple[int, int, float]) -> None:
        raise NotImplementedError

    def error(self, step: int, err: StmtError) -> None:
        raise NotImplementedError


def run_query(conn: Connection, step_index: int, query: Query, sink: StepSink) -> bool:
    """Executes one statement into `sink`; True if it succeeded. With --mirror, a committed
    write reaches the mirror before this returns."""
    if MIRROR is None:
        return _run_query(conn, step_index, query, sink)
    first_word = query.sql.lstrip().split(None, 1)[0].upper() if query.sql.strip() else ""
    commits = first_word in {"COMMIT", "END"} and bool(conn.mirror_pending)
    was_autocommit = conn.is_autocommit
    # A COMMIT with writes and its replay hold the mirror's lock together, so that the mirror
    # applies transactions in the order they committed. This stream already holds the write
    # lock, so its COMMIT waits on nobody.
    with MIRROR.lock if commits else contextlib.nullcontext():
        ok = _run_query(conn, step_index, query, sink)
        stmt = MIRROR.encode_stmt(query.sql, query.args, query.named)
        MIRROR.after_statement(
            conn,
            MirroredStatement(stmt, query.analysis.kind, first_word, ok),
            was_autocommit=was_autocommit,
        )
    return ok


def _run_query(conn: Connection, step_index: int, query: Query, sink: StepSink) -> bool:
    started = time.perf_counter()
    try:
        stmt = conn.prepare(query.sql)
    except SqliteError as err:
        sink.error(step_index, StmtError.from_sqlite(err, at_prepare=True))
        return False
    if stmt is None:
        sink.error(
            step_index, StmtError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
        )
        return False
    try:
        sink.begin(step_index, stmt.columns())
        try:
            bind_params(stmt, query)
            rows = 0
            while stmt.step():
                rows += 1
                if query.want_rows:
                    sink.row(stmt.row())
        except StmtError as err:
            sink.error(step_index, err)
            return False
        except SqliteError as err:
            sink.error(step_index, StmtError.from_sqlite(err))
            return False
        except UnicodeDecodeError as err:  # sqld cannot send such text either
            sink.error(step_index, StmtError(f"Invalid UTF-8 in a text value: {err}", "UNKNOWN"))
            return False
        affected = conn.changes() if query.analysis.is_iud else 0
        last_rowid = conn.last_insert_rowid() if query.analysis.is_insert else None
        duration_ms = (time.perf_counter() - started) * 1000.0
        # rows_read/rows_written are approximations: vanilla SQLite has no such counters
        sink.end(affected, last_rowid, (rows, affected, duration_ms))
        return True
    finally:
        stmt.finalize()


class ResultSink(StepSink):
    """Builds `StmtResult`s and a `BatchResult` (the `execute` and `batch` responses)."""

    def __init__(self) -> None:
        self.step_results: list[JsonObj | None] = []
        self.step_errors: list[JsonObj | None] = []
        self._current: JsonObj | None = None

    def skipped(self, step: int) -> None:
        self.step_results.append(None)
        self.step_errors.append(None)

    def begin(self, step: int, cols: list[tuple[str, str | None]]) -> None:
        self._current = {"cols": [{"name": n, "decltype": d} for n, d in cols], "rows": []}

    def row(self, values: list[SqlValue]) -> None:
        assert self._current is not None
        self._current["rows"].append([encode_value(v) for v in values])

    def end(self, affected: int, last_rowid: int | None, stats: tuple[int, int, float]) -> None:
        assert self._current is not None
        result = self._current
        result["affected_row_count"] = affected
        result["last_insert_rowid"] = None if last_rowid is None else str(last_rowid)
        result["replication_index"] = None
        result["rows_read"], result["rows_written"], result["query_duration_ms"] = stats
        self.step_results.append(result)
        self.step_errors.append(None)
        self._current = None

    def error(self, step: int, err: StmtError) -> None:
        self.step_results.append(None)
        self.step_errors.append(err.to_proto())
        self._current = None

    def batch_result(self) -> JsonObj:
        return {
            "step_results": self.step_results,
            "step_errors": self.step_errors,
            "replication_index": None,
        }


def eval_cond(cond: JsonObj, outcomes: list[str], conn: Connection) -> bool:
    """Spec semantics: `ok`/`error` are false for a skipped step."""
    kind = cond["type"]
    if kind == "ok":
        return outcomes[cond["step"]] == "ok"
    if kind == "error":
        return outcomes[cond["step"]] == "error"
    if kind == "not":
        return not eval_cond(cond["cond"], outcomes, conn)
    if kind == "and":
        return all(eval_cond(c, outcomes, conn) for c in cond["conds"])
    if kind == "or":
        return any(eval_cond(c, outcomes, conn) for c in cond["conds"])
    return conn.is_autocommit


def check_cond(cond: JsonObj, step_index: int, version: int) -> None:
    kind = cond["type"]
    if kind in {"ok", "error"} and cond["step"] >= step_index:
        raise ProtocolError("Invalid reference to step in a batch condition")
    if kind == "not":
        check_cond(cond["cond"], step_index, version)
    if kind in {"and", "or"}:
        for sub in cond["conds"]:
            check_cond(sub, step_index, version)
    if kind == "is_autocommit" and version < 3:
        raise ProtocolError(
            "BatchCond of type `is_autocommit` is only supported in protocol version hrana3 and higher"
        )


Program = list[tuple[JsonObj | None, Query]]


def batch_to_program(steps: list[BatchStepReq], sqls: dict[int, str], version: int) -> Program:
    program = []
    for index, step in enumerate(steps):
        query = stmt_to_query(step.stmt, sqls)
        if step.condition is not None:
            check_cond(step.condition, index, version)
        program.append((step.condition, query))
    return program


def run_program(conn: Connection, program: Program, sink: StepSink) -> None:
    outcomes: list[str] = []
    for index, (cond, query) in enumerate(program):
        if cond is not None and not eval_cond(cond, outcomes, conn):
            sink.skipped(index)
            outcomes.append("skipped")
            continue
        outcomes.append("ok" if run_query(conn, index, query, sink) else "error")


# --------------------------------------------------------------------------------------------
# Streams and batons
# --------------------------------------------------------------------------------------------

MAX_SQL_COUNT = 50
MAX_STORED_SQL_SIZE = 5000
EXPIRED_KEEP_SECONDS = 300.0


class Stream:
    def __init__(self, stream_id: int, conn: Connection) -> None:
        self.id = stream_id
        self.conn: Connection | None = conn
        self.sqls: dict[int, str] = {}
        self.baton_seq = secrets.randbits(64)
        self.lock = threading.Lock()  # held while the connection is in use
        self.acquired = False
        self.last_used = time.monotonic()

    def db(self) -> Connection:
        if self.conn is None:
            raise ProtocolError(BATON_STREAM_CLOSED)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class StreamRegistry:
    """sqld's `ServerStreamState`: streams by id, expiry, and baton signing."""

    def __init__(self, db_path: str, expiry: float, busy_timeout_ms: int) -> None:
        self.db_path = db_path
        self.expiry = expiry
        self.busy_timeout_ms = busy_timeout_ms
        self._key = secrets.token_bytes(32)
        self._mutex = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._expired: dict[int, float] = {}  # id -> when to forget it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._expire_loop, name="hrana-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- batons ------------------------------------------------------------------------------

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def encode_baton(self, stream: Stream) -> str:
        payload = stream.id.to_bytes(8, "big") + stream.baton_seq.to_bytes(8, "big")
        return base64.b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def decode_baton(self, baton: str) -> tuple[int, int]:
        try:
            data = base64.b64decode(baton + "=" * (-len(baton) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(BATON_INVALID) from None
        if len(data) != 48 or not hmac.compare_digest(self._mac(data[:16]), data[16:]):
            raise ProtocolError(BATON_INVALID)
        return int.from_bytes(data[:8], "big"), int.from_bytes(data[8:16], "big")

    # -- acquire / release -------------------------------------------------------------------

    def acquire(self, baton: str | None) -> Stream:
        if baton is None:
            conn = Connection(self.db_path, self.busy_timeout_ms)
            with self._mutex:
                stream_id = secrets.randbits(64)
                while stream_id in self._streams or stream_id in self._expired:
                    stream_id = secrets.randbits(64)
                stream = Stream(stream_id, conn)
                stream.acquired = True
                self._streams[stream_id] = stream
                return stream
        stream_id, seq = self.decode_baton(baton)
        with self._mutex:
            if stream_id in self._expired:
                raise StreamExpired()
            found = self._streams.get(stream_id)
            if found is None:
                raise ProtocolError(BATON_INVALID)
            if found.acquired or found.baton_seq != seq:
                raise ProtocolError(BATON_REUSED)
            found.acquired = True
            found.baton_seq = (found.baton_seq + 1) % 2**64
            return found

    def release(self, stream: Stream) -> str | None:
        """Makes the stream available again; returns its next baton (None once closed)."""
        with self._mutex:
            stream.acquired = False
            stream.last_used = time.monotonic()
            if stream.conn is None:
                self._streams.pop(stream.id, None)
                return None
            return self.encode_baton(stream)

    def drop(self, stream: Stream) -> None:
        """Removes a stream after a protocol error, closing (and rolling back) its connection."""
        with self._mutex:
            self._streams.pop(stream.id, None)
        with stream.lock:
            stream.close()

    # -- expiry ------------------------------------------------------------------------------

    def _expire_loop(self) -> None:
        interval = max(0.05, min(1.0, self.expiry / 10))
        while not self._stop.wait(interval):
            self.expire_idle()

    def expire_idle(self) -> None:
        now = time.monotonic()
        victims = []
        with self._mutex:
            for stream in list(self._streams.values()):
                if stream.acquired or now - stream.last_used < self.expiry:
                    continue
                if not stream.lock.acquire(blocking=False):
                    continue  # a cursor is still running on it
                del self._streams[stream.id]
                self._expired[stream.id] = now + EXPIRED_KEEP_SECONDS
                victims.append(stream)
            for stream_id, forget_at in list(self._expired.items()):
                if forget_at <= now:
                    del self._expired[stream_id]
        for stream in victims:
            try:
                stream.close()  # rolls back an open transaction
            finally:
                stream.lock.release()

    def stream_count(self) -> int:
        with self._mutex:
            return len(self._streams)

    def close_all(self) -> None:
        self._stop.set()
        with self._mutex:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            if stream.lock.acquire(timeout=2):
                try:
                    stream.close()
                finally:
                    stream.lock.release()


# --------------------------------------------------------------------------------------------
# Stream requests
# --------------------------------------------------------------------------------------------


def handle_stream_request(stream: Stream, req: StreamReq, version: int) -> JsonObj:
    """One `StreamRequest` -> `StreamResult`. ProtocolError escapes (the whole HTTP request fails)."""
    try:
        return {"type": "ok", "response": _stream_response(stream, req, version)}
    except StmtError as err:
        return {"type": "error", "error": err.to_proto()}


def _stream_response(stream: Stream, req: StreamReq, version: int) -> JsonObj:
    kind = req.type
    if kind == "close":
        stream.close()
        return {"type": "close"}
    if kind == "execute":
        conn = stream.db()
        assert req.stmt is not None
        query = stmt_to_query(req.stmt, stream.sqls)
        sink = ResultSink()
        run_query(conn, 0, query, sink)
        if sink.step_errors[0] is not None:
            raise StmtError(sink.step_errors[0]["message"], sink.step_errors[0]["code"])
        return {"type": "execute", "result": sink.step_results[0]}
    if kind == "batch":
        conn = stream.db()
        program = batch_to_program(req.batch, stream.sqls, version)
        sink = ResultSink()
        run_program(conn, program, sink)
        return {"type": "batch", "result": sink.batch_result()}
    if kind == "sequence":
        conn = stream.db()
        sql = resolve_sql(req.sql, req.sql_id, stream.sqls)
        for text, analysis in parse_statements(sql):
            sink = ResultSink()
            run_query(conn, 0, Query(text, analysis, [], None, False), sink)
            if sink.step_errors[0] is not None:
                raise StmtError(sink.step_errors[0]["message"], sink.step_errors[0]["code"])
        return {"type": "sequence"}
    if kind == "describe":
        conn = stream.db()
        return {
            "type": "describe",
            "result": describe(conn, resolve_sql(req.sql, req.sql_id, stream.sqls)),
        }
    if kind == "store_sql":
        assert req.sql_id is not None
        assert req.sql is not None
        if req.sql_id in stream.sqls:
            raise ProtocolError(f"SQL text {req.sql_id} already exists")
        if len(stream.sqls) >= MAX_SQL_COUNT:
            raise StmtError(
                f"The server already stores {len(stream.sqls)} SQL texts, it cannot store more",
                "SQL_STORE_TOO_MANY",
            )
        size = len(req.sql.encode())
        if size > MAX_STORED_SQL_SIZE:
            raise StmtError(
                f"The statement is too large to be stored: {size} B/5.0 KB", "SQL_STORE_TOO_LARGE"
            )
        stream.sqls[req.sql_id] = req.sql
        return {"type": "store_sql"}
    if kind == "close_sql":
        stream.sqls.pop(req.sql_id or 0, None)
        return {"type": "close_sql"}
    # get_autocommit
    if version < 3:
        raise ProtocolError(
            "The `get_autocommit` request is only supported in protocol version hrana3 and higher"
        )
    return {"type": "get_autocommit", "is_autocommit": stream.db().is_autocommit}


def describe(conn: Connection, sql: str) -> JsonObj:
    try:
        stmt = conn.prepare(sql)
    except SqliteError as err:
        raise StmtError.from_sqlite(err, at_prepare=True) from None
    if stmt is None:
        raise StmtError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
    try:
        return {
            "params": [{"name": name} for name in stmt.param_names()],
            "cols": [{"name": name, "decltype": decl} for name, decl in stmt.columns()],
            "is_explain": stmt.is_explain,
            "is_readonly": stmt.readonly,
        }
    finally:
        stmt.finalize()


class CursorSink(StepSink):
    """Writes cursor entries as JSON lines."""

    def __init__(self, write: Callable[[JsonObj], None]) -> None:
        self.write = write
        self._begun = False

    def begin(self, step: int, cols: list[tuple[str, str | None]]) -> None:
        self._begun = True
        self.write(
            {
                "type": "step_begin",
                "step": step,
                "cols": [{"name": n, "decltype": d} for n, d in cols],
            }
        )

    def row(self, values: list[SqlValue]) -> None:
        self.write({"type": "row", "row": [encode_value(v) for v in values]})

    def end(self, affected: int, last_rowid: int | None, stats: tuple[int, int, float]) -> None:
        self._begun = False
        rowid = None if last_rowid is None else str(last_rowid)
        self.write({"type": "step_end", "affected_row_count": affected, "last_insert_rowid": rowid})

    def error(self, step: int, err: StmtError) -> None:
        self._begun = False
        self.write({"type": "step_error", "step": step, "error": err.to_proto()})


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

INDEX_TEXT = b"Hello, this is HTTP API v2 (Hrana over HTTP)"
VERSION_TEXT = b"durably-tests-hrana-server 1 (Hrana 2/3 over HTTP, JSON)"


class HttpError(Exception):
    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class HranaServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        registry: StreamRegistry,
        auth_token: str | None,
        trace: BinaryIO | None,
    ) -> None:
        super().__init__(address, HranaHandler)
        self.registry = registry
        self.auth_token = auth_token
        self.trace_out = trace
        self.trace_lock = threading.Lock()

    def trace(self, event: JsonObj) -> None:
        if self.trace_out is None:
            return
        with self.trace_lock:
            self.trace_out.write(_json_bytes({"t": round(time.time(), 3), **event}) + b"\n")
            self.trace_out.flush()


class HranaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HranaServer

    def setup(self) -> None:
        super().setup()
        # Without this, Nagle's algorithm and the client's delayed ACKs add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the --trace output replaces the access log

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _check_auth(self) -> None:
        token = self.server.auth_token
        if token is None:
            return
        header = self.headers.get("Authorization")
        problem = None
        if header is None:
            problem = "Expected authorization header but none given"
        elif " " not in header:
            problem = "Auth string does not conform to '<scheme> <token>' form"
        else:
            scheme, given = header.split(" ", 1)
            if scheme.lower() != "bearer":
                problem = (
                    "The authentication scheme in the `Authorization` HTTP header is not supported"
                )
            elif not hmac.compare_digest(given.strip().encode(), token.encode()):
                problem = "The JWT is invalid"
        if problem is not None:
            scheme_only = None if header is None else header.split(" ", 1)[0]
            empty = header is not None and not header.partition(" ")[2].strip()
            self.server.trace({"auth_scheme": scheme_only, "empty_token": empty})
            raise HttpError(
                401, _json_bytes({"error": f"Unauthorized: `{problem}`"}), "application/json"
            )

    # -- routes ------------------------------------------------------------------------------

    GET_ROUTES = {"/health": b"", "/version": VERSION_TEXT, "/v2": INDEX_TEXT, "/v3": INDEX_TEXT}
    POST_ROUTES = {
        "/v2/pipeline": (2, "pipeline"),
        "/v3/pipeline": (3, "pipeline"),
        "/v3/cursor": (3, "cursor"),
    }

    def _forward_to_mirror(self, method: str, raw: bytes | None) -> None:
        """With --mirror, the sync protocol's requests go to the sync server (mirror.py)."""
        assert MIRROR is not None
        path = self.path.split("?", 1)[0]
        try:
            self._check_auth()
        except HttpError as err:
            self.server.trace({"method": method, "path": path, "status": err.status})
            self._send(err.status, err.body, err.content_type)
            return
        status, body, content_type = MIRROR.forward(
            method, self.path, raw, self.headers.get("Content-Type")
        )
        self.server.trace({"method": method, "path": path, "forwarded": status})
        self._send(status, body, content_type)

    def _is_hrana(self, path: str) -> bool:
        return path in self.GET_ROUTES or path in self.POST_ROUTES

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if MIRROR is not None and not self._is_hrana(path):
            self._forward_to_mirror("GET", None)
            return
        self.server.trace({"method": "GET", "path": path})
        if path in self.GET_ROUTES:
            self._send(200, self.GET_ROUTES[path])
        elif path in self.POST_ROUTES:
            self._send(405, b"")
        else:
            self._send(404, b"")  # includes "/" (sqld: WebSocket upgrades only) and /v3-protobuf

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.POST_ROUTES.get(path)
        raw = self._read_body()
        if MIRROR is not None and not self._is_hrana(path):
            self._forward_to_mirror("POST", raw)
            return
        if route is None:
            self.server.trace({"method": "POST", "path": path, "status": 404})
            self._send(404 if path not in self.GET_ROUTES else 405, b"")
            return
        version, endpoint = route
        if "?" in self.path:
            self.server.trace({"path": path, "query": self.path.split("?", 1)[1][:40]})
        try:
            self._check_auth()
            if endpoint == "pipeline":
                self._pipeline(path, raw, version)
            else:
                self._cursor(path, raw)
        except HttpError as err:
            self.server.trace(
                {"method": "POST", "path": path, "status": err.status, "error": err.body.decode()}
            )
            self._send(err.status, err.body, err.content_type)

    @staticmethod
    def _error_response(err: Exception) -> HttpError:
        if isinstance(err, ProtocolError):
            return HttpError(400, str(err).encode(), "text/plain")
        if isinstance(err, StreamExpired):
            body = _json_bytes({"message": err.message, "code": err.code})
            return HttpError(500, body, "application/json")
        if isinstance(err, StmtError):  # sqld: an anyhow error escaping to the HTTP layer
            return HttpError(
                500, _json_bytes({"error": f"Internal Error: `{err.message}`"}), "application/json"
            )
        if isinstance(err, SqliteError):
            return HttpError(
                500, _json_bytes({"error": f"Internal Error: `{err.message}`"}), "application/json"
            )
        raise err

    def _pipeline(self, path: str, raw: bytes, version: int) -> None:
        registry = self.server.registry
        try:
            body = decode_body(raw)
            requests = body.get("requests")
            if not isinstance(requests, list):
                raise json_error("missing field `requests`")
            decoded = [decode_stream_request(r) for r in requests]
            stream = registry.acquire(body.get("baton"))
        except (ProtocolError, StreamExpired, SqliteError) as err:
            raise self._error_response(err) from None
        results = []
        try:
            with stream.lock:
                for req in decoded:
                    results.append(handle_stream_request(stream, req, version))
        except (ProtocolError, StmtError, SqliteError) as err:
            registry.drop(stream)
            raise self._error_response(err) from None
        except BaseException:
            registry.drop(stream)
            raise
        baton = registry.release(stream)
        self.server.trace(
            {
                "method": "POST",
                "path": path,
                "baton_in": _short(body.get("baton")),
                "baton_out": _short(baton),
                "requests": [_describe_req(r) for r in decoded],
                "results": [r["type"] for r in results],
            }
        )
        self._send(
            200,
            _json_bytes({"baton": baton, "base_url": None, "results": results}),
            "application/json",
        )

    def _cursor(self, path: str, raw: bytes) -> None:
        registry = self.server.registry
        try:
            body = decode_body(raw)
            if "batch" not in body:
                raise json_error("missing field `batch`")
            steps = decode_batch(body["batch"])
            stream = registry.acquire(body.get("baton"))
        except (ProtocolError, StreamExpired, SqliteError) as err:
            raise self._error_response(err) from None
        stream.lock.acquire()
        try:
            conn = stream.db()
            program = batch_to_program(steps, stream.sqls, 3)
        except (ProtocolError, StmtError) as err:
            stream.lock.release()
            registry.drop(stream)
            raise self._error_response(err) from None
        try:
            # sqld hands out the next baton before the cursor runs; the stream lock keeps the
            # next request on this stream waiting until the cursor is finished.
            baton = registry.release(stream)
            self.server.trace(
                {
                    "method": "POST",
                    "path": path,
                    "baton_in": _short(body.get("baton")),
                    "baton_out": _short(baton),
                    "steps": [q.sql[:200] for _, q in program],
                    **({"conds": [c for c, _ in program]} if any(c for c, _ in program) else {}),
                }
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            gone: list[int] = []  # entries the client did not take (it may stop reading early)

            def write(entry: JsonObj | None) -> None:
                data = b"" if entry is None else _json_bytes(entry) + b"\n"
                if gone:
                    gone.append(1)
                    return
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                except OSError:  # like sqld, finish the batch even if nobody reads it
                    gone.append(1)
                    self.close_connection = True

            write({"baton": baton, "base_url": None})
            try:
                run_program(conn, program, CursorSink(write))
            except (SqliteError, StmtError) as err:
                write({"type": "error", "error": {"message": str(err), "code": "UNKNOWN"}})
            write(None)  # the last chunk
            if gone:
                self.server.trace({"path": path, "cursor_entries_unread": len(gone)})
        finally:
            stream.lock.release()


def _short(baton: str | None) -> str | None:
    """A short fingerprint of a baton for the trace (its first bytes are the stream id)."""
    return None if baton is None else hashlib.sha256(baton.encode()).hexdigest()[:10]


def _describe_req(req: StreamReq) -> JsonObj:
    out: JsonObj = {"type": req.type}
    if req.stmt is not None:
        out["sql"] = (req.stmt.sql or f"#{req.stmt.sql_id}")[:200]
    if req.batch:
        out["steps"] = [(s.stmt.sql or f"#{s.stmt.sql_id}")[:200] for s in req.batch]
        if any(s.condition for s in req.batch):
            out["conds"] = [s.condition for s in req.batch]
    if req.sql is not None and req.type != "store_sql":
        out["sql"] = req.sql[:200]
    return out


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def serve(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", required=True, help="backing SQLite file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auth-token", default=None, help="require `Authorization: Bearer TOKEN`")
    parser.add_argument("--stream-expiry", type=float, default=10.0, help="idle seconds (sqld: 10)")
    parser.add_argument("--busy-timeout", type=int, default=5000, help="SQLite busy timeout, ms")
    parser.add_argument("--trace", action="store_true", help="log each request as JSON on stderr")
    parser.add_argument("--mirror", default=None, help="replay committed writes on this server")
    parser.add_argument(
        "--forward-delay", type=float, default=0.0, help="with --mirror: delay sync requests, s"
    )
    args = parser.parse_args(argv)

    setup = Connection(args.db, args.busy_timeout)
    try:
        setup.execute("PRAGMA journal_mode=WAL")
    finally:
        setup.close()

    registry = StreamRegistry(args.db, args.stream_expiry, args.busy_timeout)
    trace = sys.stderr.buffer if args.trace else None
    httpd = HranaServer((args.host, args.port), registry, args.auth_token, trace)
    if args.mirror is not None:
        global MIRROR
        MIRROR = Mirror(args.mirror, encode_value, httpd.trace, args.forward_delay)
    registry.start()

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = httpd.server_address[:2]
    print(f"listening {host}:{port}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        registry.close_all()
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
