"""Migrations: drift, the Alembic CLI, idempotence, coexistence, concurrency, refusal, packaging.

Everything runs on real database files. ``durably.migrate()`` and ``alembic
upgrade head`` must produce the same schema as ``durably.schema.metadata``,
keep their history in ``durably_alembic_version`` only, and refuse a schema
newer than the installed library without touching it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from durably import Durably, DurablyError, SchemaError, StepContext, ValidationError, testing
from durably.clock import now_ms
from durably.ids import new_id
from durably.migrate import alembic_config
from durably.schema import metadata
from durably.schema import runs as runs_table
from durably.schema import steps as steps_table
from durably.status import StepStatus

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
VERSION_TABLE = "durably_alembic_version"
HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()

SchemaEntry = tuple[str, str, str, str]
"""(type, name, table, SQL with whitespace collapsed) of one ``sqlite_master`` row."""


# -- helpers ---------------------------------------------------------------------


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    """Local files only: these tests read and compare the files themselves. Migrating through a
    remote server is tested in tests/hrana/test_remote.py."""
    return str(request.param)


def url_for(driver: str, path: Path) -> str:
    return DRIVERS[driver].format(path=path)


def schema_of(path: Path, *, with_version_table: bool = True) -> set[SchemaEntry]:
    """durably's tables and indexes as SQLite stored them, whitespace normalised."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name LIKE 'durably\\_%' ESCAPE '\\'"
        ).fetchall()
    return {
        (kind, name, table, re.sub(r"\s+", " ", sql or "").strip())
        for kind, name, table, sql in rows
        if with_version_table or table != VERSION_TABLE
    }


def table_names(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def versions_of(path: Path, table: str = VERSION_TABLE) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [v for (v,) in conn.execute(f"SELECT version_num FROM {table}")]


def snapshot(path: Path) -> dict[str, Any]:
    """Every row of every table plus the full ``sqlite_master``: "did anything change?"."""
    with closing(sqlite3.connect(path)) as conn:
        master = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        data = {
            name: sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr)
            for (_kind, name, _table, _sql) in master
            if _kind == "table"
        }
    return {"master": master, "data": data}


def reference_schema(tmp_path: Path) -> set[SchemaEntry]:
    """The schema ``migrate()`` makes on a fresh stdlib-SQLite file."""
    path = tmp_path / "reference.db"
    with Durably(url_for("sqlite", path)) as ref:
        ref.migrate()
    return schema_of(path)


def alembic_cli(*args: str, env_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """``alembic ...`` from the repo root, as a developer types it."""
    env = {k: v for k, v in os.environ.items() if k != "DURABLY_DATABASE_URL"}
    if env_url is not None:
        env["DURABLY_DATABASE_URL"] = env_url
    alembic = Path(sys.executable).with_name("alembic")
    command = [str(alembic)] if alembic.exists() else [sys.executable, "-m", "alembic"]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def echo(step: StepContext, payload: dict[str, int]) -> dict[str, int]:
    return payload


def add_run(instance: Durably) -> str:
    """Store one pending run (no worker), so a test can check data survives."""
    job = instance.job("noop")(echo)
    return job.trigger({"n": 1}, labels={"team": "a"}).id


@pytest.fixture
def migrated(db_url: str, db_path: Path) -> Path:
    """A migrated database file with one pending run in it; nothing holds it open."""
    with Durably(db_url) as instance:
        instance.migrate()
        add_run(instance)
    return db_path


# -- 1. the Core metadata and the migrations do not drift ---------------------------


def drift(instance: Durably) -> list[Any]:
    """What Alembic's autogenerate finds between the database and ``durably.schema``."""
    with instance.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    return [
        diff for diff in diffs if not (diff[0] == "remove_table" and diff[1].name == VERSION_TABLE)
    ]


def test_autogenerate_finds_no_drift_after_migrate(db_url: str) -> None:
    with Durably(db_url) as instance:
        instance.migrate()
        assert drift(instance) == []


def test_autogenerate_comparison_does_see_a_difference(db_url: str) -> None:
    """Guard for the drift test: the comparison reports a column the database lacks."""
    changed = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["durably_runs"].append_column(sa.Column("extra", sa.Integer))
    with Durably(db_url) as instance:
        instance.migrate()
        with instance.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, changed)
    added = [d for d in diffs if d[0] == "add_column"]
    assert [(d[2], d[3].name) for d in added] == [("durably_runs", "extra")]


def test_migrated_ddl_equals_metadata_create_all(tmp_path: Path, driver: str) -> None:
    """Stricter than autogenerate: partial-index predicates and defaults match too."""
    created = tmp_path / "create_all.db"
    engine = sa.create_engine(url_for("sqlite", created))
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    migrated_path = tmp_path / "migrated.db"
    with Durably(url_for(driver, migrated_path)) as instance:
        instance.migrate()
    assert schema_of(migrated_path, with_version_table=False) == schema_of(created)


# -- 2. `alembic upgrade head` from the repo root ---------------------------------


@pytest.mark.parametrize(
    ("how", "driver"),
    [("x-argument", "sqlite"), ("env-var", "sqlite"), ("x-argument", "libsql")],
)
def test_alembic_cli_upgrade_matches_migrate(tmp_path: Path, how: str, driver: str) -> None:
    path = tmp_path / "a.db"
    url = url_for(driver, path)
    if how == "x-argument":
        result = alembic_cli("-x", f"url={url}", "upgrade", "head")
    else:
        result = alembic_cli("upgrade", "head", env_url=url)
    assert result.returncode == 0, result.stderr

    assert schema_of(path) == reference_schema(tmp_path)
    assert versions_of(path) == [HEAD]
    assert "alembic_version" not in table_names(path)

    # The CLI and migrate() share one history: migrate() then finds nothing to do.
    before = snapshot(path)
    with Durably(url) as instance:
        instance.migrate()
        assert instance.process_one() is False
    assert snapshot(path) == before


def test_alembic_cli_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    url = url_for("sqlite", path)
    assert alembic_cli("-x", f"url={url}", "upgrade", "head").returncode == 0
    before = snapshot(path)
    result = alembic_cli("upgrade", "head", env_url=url)
    assert result.returncode == 0, result.stderr
    assert snapshot(path) == before


def test_alembic_cli_without_url_explains_what_to_set(tmp_path: Path) -> None:
    result = alembic_cli("upgrade", "head")
    assert result.returncode != 0
    assert "DURABLY_DATABASE_URL" in result.stderr + result.stdout


# -- 3. idempotence -------------------------------------------------------------------


def test_migrate_three_times_is_idempotent_and_keeps_data(db_url: str, db_path: Path) -> None:
    with Durably(db_url) as instance:
        instance.migrate()
        run_id = add_run(instance)
    # Read with the stdlib's sqlite3 while no libSQL connection is open: two
    # copies of SQLite in one process break each other's WAL (docs/deployment.md).
    schema = schema_of(db_path)
    with Durably(db_url) as instance:
        instance.migrate()
        instance.migrate()
        assert instance.get_run(run_id) is not None
    with Durably(db_url) as again:  # a new process-like instance at start-up
        again.migrate()
        run = again.get_run(run_id)
        assert run is not None
        assert run.status == "pending"
        assert run.labels == {"team": "a"}
    assert schema_of(db_path) == schema
    assert versions_of(db_path) == [HEAD]


EARLIER = sorted(
    rev.revision
    for rev in ScriptDirectory(str(ROOT / "migrations")).walk_revisions()
    if rev.revision != HEAD
)


def _alembic(instance: Durably, direction: str, revision: str) -> None:
    """``alembic upgrade/downgrade REVISION`` on durably's own engine (one copy of SQLite)."""
    with instance.engine.begin() as conn:
        getattr(alembic_command, direction)(alembic_config(conn), revision)


@pytest.mark.parametrize("revision", EARLIER)
def test_a_database_of_an_earlier_revision_upgrades_with_its_runs_in_order(
    db_url: str, revision: str
) -> None:
    # Runs written by an older durably survive the upgrade, are listed newest
    # first and claimed oldest first; and the way back down works too.
    done: list[int] = []
    with Durably(db_url) as instance:
        _alembic(instance, "upgrade", revision)
        created = 1_700_000_000_000
        rows = [
            {
                "id": new_id(),
                "job_name": "count",
                "status": "pending",
                "input": f'{{"n": {n}}}',
                "labels": "{}",
                "created_at": created + n,
                "updated_at": created + n,
            }
            for n in range(3)
        ]
        if revision >= "durably_0007":  # written by a durably that sets run_at itself
            for row in rows:
                row["run_at"] = row["created_at"]
        with instance.engine.begin() as conn:
            conn.execute(runs_table.insert(), rows)

        instance.migrate()

        @instance.job("count")
        def count(step: StepContext, input: dict[str, int]) -> None:
            done.append(input["n"])

        assert [run.id for run in instance.get_runs()] == [row["id"] for row in reversed(rows)]
        # Queue semantics (durably_0007): in the default queue, claimable since
        # they were created, on their first attempt.
        assert [(r.queue, r.priority, r.attempt, r.run_at) for r in instance.get_runs()] == [
            ("default", 0, 1, r.created_at) for r in instance.get_runs()
        ]
        assert instance.process_until_idle() == 3
        assert done == [0, 1, 2]

        _alembic(instance, "downgrade", revision)
        instance.migrate()
        assert [run.status for run in instance.get_runs()] == ["completed"] * 3
        assert drift(instance) == []


def test_downgrading_below_counted_step_counters_stores_those_of_active_runs(
    db_url: str,
) -> None:
    # Revision durably_0005 counts an active run's step counters when it is read; the
    # trigger that durably_0004 brings back only moves stored ones forward.
    with Durably(db_url) as instance:
        instance.migrate()

        @instance.job("two")
        def two(step: StepContext, input: None) -> None:
            pass

        run = two.trigger(None)
        service = testing.lease_service(instance)
        claimed = testing.claim(instance, "worker-a")
        assert claimed is not None

        def persist(name: str, index: int) -> bool:
            step = service.persist_step_op(
                claimed.lease,
                name=name,
                index=index,
                status=StepStatus.COMPLETED,
                output_json="null",
                error=None,
                started_at=now_ms(),
                run_attempt=1,
            )
            return testing.run_operation(instance, step)

        for index, name in enumerate(["first", "second"]):
            assert persist(name, index)

        def stored() -> tuple[int, int]:
            with instance.engine.connect() as conn:
                row = conn.execute(
                    sa.select(
                        runs_table.c.current_step_index, runs_table.c.completed_step_count
                    ).where(runs_table.c.id == run.id)
                ).one()
            return row[0], row[1]

        _alembic(instance, "downgrade", "durably_0004")
        assert stored() == (2, 2)

        # The trigger is back: a third step, as a worker of that revision writes it, moves them on.
        with instance.engine.begin() as conn:
            conn.execute(
                steps_table.insert().values(
                    run_id=run.id,
                    name="third",
                    step_index=2,
                    status="completed",
                    output="null",
                    lease_generation=claimed.lease.generation,
                    started_at=now_ms(),
                    completed_at=now_ms(),
                )
            )
        assert stored() == (3, 3)
        instance.migrate()
        leased = instance.get_run(run.id)
        assert leased is not None
        assert (leased.current_step_index, leased.completed_step_count) == (3, 3)
        assert drift(instance) == []


# -- 4. the host application's own Alembic history --------------------------------------


def make_host_database(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('host_rev_1234')")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()


def host_state(path: Path) -> tuple[list[str], list[tuple[Any, ...]], list[Any]]:
    with closing(sqlite3.connect(path)) as conn:
        users = conn.execute("SELECT * FROM users").fetchall()
        ddl = conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN ('alembic_version', 'users') "
            "ORDER BY name"
        ).fetchall()
    return versions_of(path, "alembic_version"), users, ddl


def test_migrate_leaves_the_host_alembic_version_alone(
    db_url: str, db_path: Path, tmp_path: Path
) -> None:
    make_host_database(db_path)
    before = host_state(db_path)
    with Durably(db_url) as instance:
        instance.migrate()
        instance.migrate()
        run_id = add_run(instance)
        assert instance.get_run(run_id) is not None
    assert host_state(db_path) == before
    assert versions_of(db_path, "alembic_version") == ["host_rev_1234"]
    assert versions_of(db_path) == [HEAD]
    assert schema_of(db_path) == reference_schema(tmp_path)


def test_alembic_cli_leaves_the_host_alembic_version_alone(tmp_path: Path) -> None:
    path = tmp_path / "host.db"
    make_host_database(path)
    before = host_state(path)
    result = alembic_cli("-x", f"url={url_for('sqlite', path)}", "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert host_state(path) == before
    assert versions_of(path) == [HEAD]


# -- 5. four processes migrating one fresh file at the same moment ----------------------

RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from durably import Durably

    sync_dir, urls = Path(sys.argv[1]), sys.argv[2:]
    me = os.getpid()
    for round_no, url in enumerate(urls):
        instance = Durably(url)
        (sync_dir / f"ready-{round_no}-{me}").touch()
        start = sync_dir / f"start-{round_no}"
        while not start.exists():
            time.sleep(0.0005)
        instance.migrate()
        instance.close()
        print("migrated", round_no, flush=True)
    """
)


@pytest.mark.slow
def test_four_processes_migrate_a_fresh_file_at_once(tmp_path: Path, driver: str) -> None:
    rounds, processes = 4, 4
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    paths = [tmp_path / f"race-{n}.db" for n in range(rounds)]
    command = [sys.executable, str(script), str(sync_dir), *(url_for(driver, p) for p in paths)]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for round_no in range(rounds):
            deadline = time.monotonic() + 60
            while len(list(sync_dir.glob(f"ready-{round_no}-*"))) < processes:
                if any(child.poll() not in (None, 0) for child in children):
                    break
                assert time.monotonic() < deadline, "racers never got ready"
                time.sleep(0.005)
            (sync_dir / f"start-{round_no}").touch()
        outcomes = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (out, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, err
        assert out.count("migrated") == rounds
    expected = reference_schema(tmp_path)
    for path in paths:
        assert schema_of(path) == expected
        assert versions_of(path) == [HEAD]
        with Durably(url_for(driver, path)) as instance:
            assert instance.process_one() is False  # schema check passes


# -- 6. a schema this version does not know -------------------------------------------


def test_newer_schema_is_refused_and_left_untouched(db_url: str, migrated: Path) -> None:
    with closing(sqlite3.connect(migrated)) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff_future'")
        conn.commit()
    before = snapshot(migrated)

    instance = Durably(db_url)
    try:
        instance.job("noop")(echo)
        with pytest.raises(SchemaError, match="newer") as excinfo:
            instance.migrate()
        assert "ffff_future" in str(excinfo.value)
        with pytest.raises(SchemaError, match="newer"):
            instance.start()
        assert not instance.is_running
        with pytest.raises(SchemaError, match="newer"):
            instance.process_one()
        with pytest.raises(SchemaError, match="newer"):
            instance.process_until_idle()
    finally:
        instance.close()
    assert snapshot(migrated) == before


def test_unmigrated_database_tells_the_user_to_migrate(db_url: str, db_path: Path) -> None:
    instance = Durably(db_url)
    try:
        job = instance.job("noop")(echo)
        with pytest.raises(SchemaError, match=r"migrate\(\)"):
            instance.start()
        assert not instance.is_running
        with pytest.raises(SchemaError, match=r"migrate\(\)"):
            instance.process_one()
        with pytest.raises(SchemaError, match=r"migrate\(\)"):
            job.trigger({"n": 1})
        with pytest.raises(SchemaError, match=r"migrate\(\)"):
            asyncio.run(job.trigger_async({"n": 1}))
        with pytest.raises(SchemaError, match=r"migrate\(\)"):
            instance.get_runs()
        # The error is also a DurablyError, and migrating fixes it.
        assert issubclass(SchemaError, DurablyError)
        instance.migrate()
        assert job.trigger({"n": 1}).status == "pending"
        assert instance.process_one() is True
    finally:
        instance.close()


# -- wrong URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://x/y",
        "mysql+pymysql://user@host/db",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+libsql://",
        "sqlite:///file:mem?mode=memory&uri=true",
        "sqlite://remote.example.com/db",
        "libsql://",
        "https:///no-host",
        "sqlite+libsql://remote.example.com?bogus=1",
        "sqlite+libsql://remote.example.com?secure=maybe",
        "sqlite+libsql://remote.example.com?timeout=-1",
        "libsql://remote.example.com?timeout=soon",
        "sqlite+hrana:///no-host",
        "not a url",
        "",
    ],
)
def test_unsupported_urls_raise_validation_error(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError):
        Durably(url)
    assert list(tmp_path.iterdir()) == []  # nothing created on disk


# -- 7. the installed (non-editable) package ships its migrations ----------------------------

NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_package_migrates_from_an_empty_directory(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # The default pip cache is used, so repeated runs install from it quickly.
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    offline = any(marker in install.stdout + install.stderr for marker in NETWORK_ERRORS)
    if install.returncode != 0 and offline and not os.environ.get("CI"):
        pytest.skip("no network to install dependencies from")
    assert install.returncode == 0, install.stdout + install.stderr

    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DURABLY_DATABASE_URL")}
    probe = textwrap.dedent(
        """
        import durably
        from durably import Durably
        Durably('sqlite:///x.db').migrate()
        print(durably.__file__)
        print(durably.alembic_version_location())
        """
    )
    result = subprocess.run(
        [str(python), "-c", probe],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    module_file, version_location = result.stdout.split()
    package_dir = Path(module_file).parent
    assert package_dir.is_relative_to(venv), "the test must exercise the installed copy"
    assert (package_dir / "_migrations" / "env.py").is_file()
    # What a host puts into its version_locations (tests/behaviour/test_host_alembic.py).
    assert Path(version_location) == package_dir / "_migrations" / "versions"
    assert {p.name for p in Path(version_location).glob("*.py")} == {
        p.name for p in (ROOT / "migrations" / "versions").glob("*.py")
    }
    assert versions_of(workdir / "x.db") == [HEAD]
    assert schema_of(workdir / "x.db") == reference_schema(tmp_path)
    shutil.rmtree(venv, ignore_errors=True)
