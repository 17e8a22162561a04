"""PostgreSQL for the bench: one throwaway server per bench run, a new database per case.

The server is the test suite's (tests/postgres/server.py: ``initdb`` and
``pg_ctl`` in a temporary directory, a Unix socket only, run as ``nobody``
under root), started here with PostgreSQL's own durability settings instead
of the tests' fast ones: ``fsync``, ``full_page_writes`` and
``synchronous_commit`` on, as a user's server has them.

The bench's ``sync`` column maps onto ``synchronous_commit``, set on each
case's database: ``NORMAL`` is ``off`` (a crash of the machine may lose the
last commits, never corrupts: what SQLite's ``NORMAL`` promises in WAL mode),
``FULL`` is ``on``, PostgreSQL's default (each commit waits for its WAL flush).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from tests.postgres.server import Server

DRIVER = "postgresql"
SYNCHRONOUS_COMMIT = {"NORMAL": "off", "FULL": "on"}
SETTINGS = {
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
}
"""What the bench's server changes from the tests' (PostgreSQL's defaults, but for the socket)."""


def unavailable() -> str | None:
    """Why the PostgreSQL cases cannot run here (one line), or None."""
    if importlib.util.find_spec("psycopg") is None:
        return "not run: psycopg is not installed (pip install 'durably[postgresql]')"
    from tests.postgres.server import find_binaries

    if find_binaries() is None:
        return (
            "not run: no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
            "/usr/lib/postgresql/*/bin (make postgresql-server)"
        )
    return None


class BenchServer:
    """The run's server, started by :func:`serving`; cases ask it for databases."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self.version = ""
        self.error = "not started"

    def start(self, parent: Path | None) -> None:
        from tests.postgres.server import start_server

        try:
            self._server = start_server(SETTINGS, parent)
        except Exception as exc:  # every PostgreSQL case then fails, saying why
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            return
        with self._server.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.version = str(row[0]) if row else "?"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def database(self, setting: str = "NORMAL") -> str:
        """The durably URL of a new database whose ``synchronous_commit`` follows ``setting``."""
        if self._server is None:
            raise RuntimeError(f"the bench's PostgreSQL server is not running ({self.error})")
        name = self._server.create_database("bench")
        with self._server.admin() as conn:
            conn.execute(
                f'ALTER DATABASE "{name}" SET synchronous_commit = {SYNCHRONOUS_COMMIT[setting]}'
            )
        return self._server.url(name)


SERVER = BenchServer()


@contextlib.contextmanager
def serving(drivers: Sequence[str], parent: Path | None) -> Iterator[None]:
    """Run :data:`SERVER` for the block when ``drivers`` asks for PostgreSQL and it can run."""
    if DRIVER not in drivers or unavailable() is not None:
        yield
        return
    SERVER.start(parent)
    try:
        yield
    finally:
        SERVER.stop()


def conninfo(url: str) -> dict[str, Any]:
    """psycopg's connection arguments for a durably URL of :data:`SERVER`."""
    parsed = sa.engine.make_url(url)
    return {"host": parsed.query["host"], "user": parsed.username, "dbname": parsed.database}


def connect(url: str, autocommit: bool = True) -> Any:
    """A plain psycopg connection to the database of ``url`` (no durably, no SQLAlchemy)."""
    import psycopg

    return psycopg.connect(**conninfo(url), autocommit=autocommit)
