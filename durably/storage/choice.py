"""Which storage a URL gets: SQLite's tuned :class:`Database`, or :class:`PostgresDatabase`.

The two share their three ways in (``read``, ``write``, ``write_batch``) and
what surrounds them, so the rest of durably takes either (:data:`AnyDatabase`)
and never asks which. Only the storage layer picks, here, once per URL.
"""

from __future__ import annotations

from typing import TypeAlias

from sqlalchemy.engine import URL

from .database import Database
from .postgresql import PostgresDatabase
from .urls import make_engine_url

AnyDatabase: TypeAlias = Database | PostgresDatabase


def open_database(
    url: str | URL,
    *,
    pool_size: int = 5,
    lock_timeout: float = 30.0,
    synchronous: str = "NORMAL",
    auth_token: str | None = None,
) -> AnyDatabase:
    """The storage for ``url`` (``synchronous`` is SQLite's; a server keeps its own)."""
    engine_url = make_engine_url(url)
    if engine_url.get_backend_name() == "postgresql":
        return PostgresDatabase(
            engine_url, pool_size=pool_size, lock_timeout=lock_timeout, auth_token=auth_token
        )
    return Database(
        engine_url,
        pool_size=pool_size,
        lock_timeout=lock_timeout,
        synchronous=synchronous,
        auth_token=auth_token,
    )
