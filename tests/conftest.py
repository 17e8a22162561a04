"""Shared fixtures: every behavioural test runs on a real SQLite file, a real libSQL file, a
remote libSQL server (the Hrana test server in tests/hrana, a separate process) and a real
PostgreSQL server the session starts itself (tests/postgres/server.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import Durably
from durably.bridge import LoopThread
from tests.hrana.process import Server, start_server
from tests.postgres import server as postgres

DRIVERS = {
    "sqlite": "sqlite:///{path}",
    "libsql": "sqlite+libsql:///{path}",
    "remote": "sqlite+libsql://127.0.0.1:{port}?secure=false&auth_token={token}",
    "postgresql": "postgresql+psycopg://…",  # a fresh database per test: see ``postgres_db``
}
REMOTE_TOKEN = "suite-token"

FAST = {
    "polling_interval": 0.02,
    "heartbeat_interval": 0.1,
    "stale_threshold": 1.0,
}
"""Worker settings that keep tests quick; tests override what they need."""


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        module = f"{request.path.parent.name}/{request.path.stem}"
        if module in SQLITE_ONLY:
            pytest.skip(f"SQLite only: {SQLITE_ONLY[module]}")
        if module not in POSTGRESQL_PORTED:
            pytest.skip(f"not yet ported to PostgreSQL: {module}")
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "durably.db"


@pytest.fixture
def db_url(driver: str, db_path: Path, request: pytest.FixtureRequest) -> str:
    if driver == "remote":
        server: Server = request.getfixturevalue("hrana_server")
        return DRIVERS["remote"].format(port=server.port, token=REMOTE_TOKEN)
    if driver == "postgresql":
        return str(request.getfixturevalue("postgres_db"))
    return DRIVERS[driver].format(path=db_path)


POSTGRESQL_PORTED = frozenset(
    {
        "behaviour/test_async",
        "behaviour/test_trigger_async_connection",
        "behaviour/test_blocking_calls",
        "behaviour/test_cross_engine",
        "behaviour/test_events",
        "behaviour/test_examples",
        "behaviour/test_flow_control",
        "behaviour/test_io_models",
        "behaviour/test_migrations",
        "behaviour/test_operations",
        "behaviour/test_opentelemetry",
        "behaviour/test_processing",
        "behaviour/test_prometheus",
        "behaviour/test_queues",
        "behaviour/test_recovery",
        "behaviour/test_retries",
        "behaviour/test_run_api",
        "behaviour/test_schedule_timezones",
        "behaviour/test_schedules",
        "behaviour/test_serializer",
        "behaviour/test_signals",
        "behaviour/test_step_attempts",
        "behaviour/test_steps",
        "behaviour/test_timeouts",
        "behaviour/test_trigger",
        "behaviour/test_waits",
        "behaviour/test_worker",
        "crash/test_bad_data",
        "crash/test_competing",
        "crash/test_flow_control",
        "crash/test_kill",
        "crash/test_kill_loop",
        "crash/test_pause",
        "crash/test_poison",
        "crash/test_regressions",
        "crash/test_schedules",
        "crash/test_schema",
        "crash/test_shutdown",
        "crash/test_signal_handlers",
        "crash/test_waits",
        "storage/test_loop_commit",
        "storage/test_loop_lag",
        "storage/test_operation",
        "storage/test_queue_claims",
        "storage/test_write_batch",
    }
) | frozenset(filter(None, os.environ.get("PORTING_TO_POSTGRESQL", "").split(",")))
"""The test modules (``folder/module``) that run on PostgreSQL too: every behaviour module
that takes the ``driver`` fixture, every crash module but those that inject SQLite's own
faults and test_remote (a libSQL server), and the storage modules whose behaviour is not
SQLite's machinery (see :data:`SQLITE_ONLY`). The fixture skips the PostgreSQL case of any
other module, saying so. PostgreSQL's own faults have a crash module of their own
(crash/test_postgresql_faults, on the server directly, not through this fixture). The CLI
and web modules choose their databases themselves. While porting a module, name it in
``PORTING_TO_POSTGRESQL`` (comma-separated, e.g. ``crash/test_waits``) to run its
PostgreSQL case."""

SQLITE_ONLY = {
    "crash/test_db_faults": "SQLite's own faults (a locked, read-only or moved file); "
    "PostgreSQL's: crash/test_postgresql_faults",
    "crash/test_foreign_writer": "another program writing the SQLite file",
    "storage/test_claim_plan": "SQLite's EXPLAIN QUERY PLAN of SQLite's claim statement; "
    "PostgreSQL claims with core/claim_postgresql and plans by its statistics",
    "storage/test_group_commit": "a process's writers share SQLite's one write transaction; "
    "PostgreSQL commits concurrent transactions side by side",
    "storage/test_locking": "another process holds the file's write lock; PostgreSQL's row "
    "locks: crash/test_postgresql_faults",
}
"""The modules whose PostgreSQL case does not apply (SQLite's own machinery), and why; the
``driver`` fixture skips it saying so."""


_POSTGRESQL_LEFT_OUT = pytest.StashKey[int]()
_NO_SERVER = "no initdb/pg_ctl/postgres on PATH or in /usr/lib/postgresql/*/bin"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _needs_postgresql(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("driver") == "postgresql":
        return True
    return bool({"postgres_db", "postgres_server"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without PostgreSQL's binaries (and outside CI), its tests are left out, said in one
    line at the end (:func:`pytest_terminal_summary`)."""
    if _in_ci() or postgres.find_binaries() is not None:
        return
    left_out = [item for item in items if _needs_postgresql(item)]
    if left_out:
        items[:] = [item for item in items if not _needs_postgresql(item)]
        config.hook.pytest_deselected(items=left_out)
        config.stash[_POSTGRESQL_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left_out = config.stash.get(_POSTGRESQL_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"PostgreSQL tests skipped ({left_out}): {_NO_SERVER}; `make test` installs "
            "Debian's postgresql (with CI=true they run, or fail)"
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Server]:
    """A PostgreSQL server of this session's own, in a temporary directory.

    Without the server binaries the PostgreSQL tests are skipped, unless
    ``CI`` is set: CI must run them (``make test`` installs Debian's
    ``postgresql``).
    """
    try:
        server = postgres.start_server()
    except postgres.ServerUnavailable as exc:
        if _in_ci():
            pytest.fail(f"CI=true but PostgreSQL cannot run: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc} (make test installs Debian's postgresql)")
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: postgres.Server) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def hrana_server(db_path: Path) -> Iterator[Server]:
    """A libSQL server process serving ``db_path`` over Hrana (HTTP), with an auth token.

    Its lock wait is short, so that durably's ``lock_timeout`` (client-side
    retries) is what the locking tests see, as on a local file.
    """
    server = start_server(
        db_path.parent, db_path.stem, "--busy-timeout", "50", token=REMOTE_TOKEN, trace=False
    )
    yield server
    server.stop()


ENGINES = ("thread", "asyncio")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_engines`` run once per worker engine, the others on threads."""
    if "engine" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker("both_engines") is not None
        metafunc.parametrize("engine", ENGINES if marked else ENGINES[:1])


class AsyncioEngineDurably(Durably):
    """A ``Durably`` whose sync engine calls drive the asyncio engine instead.

    The behavioural tests are written against ``start()``/``stop()``/
    ``process_one()``; here those run ``start_async()`` & co. on an event
    loop in a thread of its own (as an ASGI server's loop would be), so the
    same tests prove the asyncio engine.
    """

    def __init__(self, url: str, loop: LoopThread, **options: Any) -> None:
        super().__init__(url, **options)
        self._test_loop = loop

    def start(self, *, queues: Iterable[str] | None = None) -> None:
        self._test_loop.run(self.start_async(queues=queues))

    def stop(self, timeout: float | None = None) -> None:
        self._test_loop.run(self.stop_async(timeout))

    def process_one(self, *, queues: Iterable[str] | None = None) -> bool:
        return self._test_loop.run(self.process_one_async(queues=queues))

    def process_until_idle(
        self, max_runs: int | None = None, *, queues: Iterable[str] | None = None
    ) -> int:
        return self._test_loop.run(self.process_until_idle_async(max_runs, queues=queues))

    def close(self) -> None:
        self._test_loop.run(self.close_async())


@pytest.fixture
def app_loop() -> Iterator[LoopThread]:
    """An event loop in a thread: the stand-in for an ASGI server's loop."""
    loop = LoopThread(name="test-app-loop")
    yield loop
    loop.stop()


@pytest.fixture
def make_durably(
    db_url: str, engine: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Durably]]:
    """Build migrated ``Durably`` instances on the test's database; all closed at teardown."""
    made: list[Durably] = []
    loop = request.getfixturevalue("app_loop") if engine == "asyncio" else None

    def factory(**options: Any) -> Durably:
        settings = {**FAST, **options}
        if loop is None:
            instance = Durably(db_url, **settings)
        else:
            instance = AsyncioEngineDurably(db_url, loop, **settings)
        instance.migrate()
        made.append(instance)
        return instance

    yield factory
    for instance in reversed(made):
        instance.close()


@pytest.fixture
def durably(make_durably: Callable[..., Durably]) -> Durably:
    return make_durably()
