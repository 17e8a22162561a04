"""``sqlite+hrana://HOST[:PORT][?secure=true&auth_token=…]``: the Hrana driver as a SQLAlchemy dialect.

It is SQLAlchemy's SQLite dialect (same SQL, same types) over
:mod:`durably.hrana.dbapi`. durably uses it for ``sqlite+libsql://HOST``
URLs; it is registered under ``sqlite.hrana`` so Alembic and plain
SQLAlchemy code can use it too.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPIConnection, IsolationLevel

from . import dbapi

MIN_SQLITE_VERSION = (3, 35, 0)
"""``UPDATE … RETURNING``, which the atomic claim relies on."""

_TRUE = ("1", "true", "yes", "on")
URL_OPTIONS = ("secure", "auth_token", "authToken", "timeout")
"""The query options a ``sqlite+hrana://`` (or remote ``sqlite+libsql://``) URL may carry."""


class HranaDialect(SQLiteDialect):
    driver = "hrana"
    supports_statement_cache = True
    default_paramstyle = "qmark"
    is_async = False

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        return dbapi

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.QueuePool

    def create_connect_args(self, url: URL) -> tuple[list[Any], dict[str, Any]]:
        if not url.host:
            raise dbapi.InterfaceError(
                "a remote libSQL URL needs a host: sqlite+libsql://HOST[:PORT]", executed=False
            )
        query = dict(url.query)
        secure = str(query.pop("secure", "false")).lower() in _TRUE
        options: dict[str, Any] = {}
        token = query.pop("auth_token", None) or query.pop("authToken", None)
        if token:
            options["auth_token"] = str(token)
        if "timeout" in query:
            options["timeout"] = float(str(query.pop("timeout")))
        if query:
            raise dbapi.InterfaceError(
                f"unknown libSQL URL option(s): {', '.join(sorted(query))}", executed=False
            )
        netloc = url.host if url.port is None else f"{url.host}:{url.port}"
        path = f"/{url.database}" if url.database else ""
        scheme = "https" if secure else "http"
        return [f"{scheme}://{netloc}{path}"], options

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        text = str(connection.exec_driver_sql("SELECT sqlite_version()").scalar())
        version = tuple(int(part) for part in text.split(".") if part.isdigit())
        if version < MIN_SQLITE_VERSION:
            raise dbapi.NotSupportedError(
                f"the libSQL server runs SQLite {text}; durably needs 3.35 or newer",
                executed=True,
            )
        return version

    # The server's isolation is always SERIALIZABLE; asking costs a round trip
    # and a PRAGMA that not every server accepts.
    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        return "SERIALIZABLE"

    def set_isolation_level(self, dbapi_connection: DBAPIConnection, level: IsolationLevel) -> None:
        if level != "SERIALIZABLE":
            raise dbapi.NotSupportedError(
                f"isolation level {level} is not available on a remote libSQL database",
                executed=False,
            )

    def do_begin(self, dbapi_connection: Any) -> None:
        # Held back by the driver and sent with the first statement; a
        # "begin" event listener may already have asked for BEGIN IMMEDIATE.
        if not dbapi_connection.in_transaction:
            dbapi_connection.cursor().execute("BEGIN")

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, dbapi.Error) and e.connection_lost


dialect = HranaDialect
