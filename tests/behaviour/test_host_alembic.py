"""durably's revisions in a host application's own Alembic environment, and their ids.

A host puts ``durably.alembic_version_location()`` into its ``version_locations``
and runs ``alembic upgrade heads``: its own ``env.py``, its own revision, its
own ``alembic_version`` table. durably must then find its schema there:
``migrate()`` does nothing and workers start. Also here: durably's revision
ids are unique (``durably_NNNN``), and a database recorded under the ids
durably used before (``0003``) is recognised and renamed.

Everything runs on real database files, through ``alembic.command`` and the
``alembic`` command line, as a host would run them.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic import command as alembic_command
from alembic.config import Config
from alembic.script import ScriptDirectory

import durably
from durably import Durably, SchemaError, StepContext
from durably.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
VERSION_TABLE = "durably_alembic_version"
HOST_TABLE = "alembic_version"
SCRIPTS = ScriptDirectory(str(ROOT / "migrations"))
HEAD = SCRIPTS.get_current_head()
HOST_REVISION = "a1b2c3d4e5f6"

HOST_ENV = textwrap.dedent(
    """
    from alembic import context
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
    """
)

HOST_REVISION_SCRIPT = textwrap.dedent(
    f'''
    """the host's users table"""
    import sqlalchemy as sa
    from alembic import op

    revision = "{HOST_REVISION}"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        op.create_table(
            "users",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.Text, nullable=False),
        )


    def downgrade():
        op.drop_table("users")
    '''
)


# -- helpers ---------------------------------------------------------------------


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    """Local files only: the host's Alembic and these tests read the file themselves."""
    return str(request.param)


def url_for(driver: str, path: Path) -> str:
    return DRIVERS[driver].format(path=path)


def make_host(tmp_path: Path, db: Path, *, durably_in_ini: bool) -> Path:
    """A host application's Alembic environment; returns its alembic.ini.

    With ``durably_in_ini`` durably's location is written into the file, as
    for the ``alembic`` command line; otherwise the caller adds it to the
    ``Config`` (docs/deployment.md shows both).
    """
    host = tmp_path / "host"
    (host / "alembic" / "versions").mkdir(parents=True)
    (host / "alembic" / "env.py").write_text(HOST_ENV)
    (host / "alembic" / "versions" / f"{HOST_REVISION}_users.py").write_text(HOST_REVISION_SCRIPT)
    locations = ["%(here)s/alembic/versions"]
    if durably_in_ini:
        locations.append(durably.alembic_version_location())
    ini = host / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        "script_location = %(here)s/alembic\n"
        "path_separator = os\n"
        f"version_locations = {os.pathsep.join(locations)}\n"
        f"sqlalchemy.url = sqlite:///{db}\n"
    )
    return ini


def host_config(ini: Path) -> Config:
    """The host's ``Config`` with durably's revisions added, as docs/deployment.md does it."""
    config = Config(str(ini))
    config.set_main_option(
        "version_locations",
        os.pathsep.join(["%(here)s/alembic/versions", durably.alembic_version_location()]),
    )
    return config


def docs_recipe() -> str:
    """docs/deployment.md's Python recipe: the block that calls ``alembic_version_location()``."""
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    (recipe,) = [block for block in blocks if "alembic_version_location()" in block]
    return str(recipe)


def run_python(code: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def host_alembic(ini: Path, *args: str) -> None:
    """``alembic -c ini ...`` as a host's deploy step types it."""
    alembic = Path(sys.executable).with_name("alembic")
    command = [str(alembic)] if alembic.exists() else [sys.executable, "-m", "alembic"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    result = subprocess.run(
        [*command, "-c", str(ini), *args],
        cwd=ini.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def rows(path: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] if len(row) == 1 else row for row in conn.execute(sql)]


def table_names(path: Path) -> set[str]:
    return set(rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'"))


def durably_schema(path: Path) -> set[tuple[str, str]]:
    """durably's tables and indexes (not a version table), whitespace normalised."""
    return {
        (name, re.sub(r"\s+", " ", sql or ""))
        for name, sql in rows(
            path,
            "SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE 'durably\\_%' ESCAPE '\\' "
            f"AND tbl_name != '{VERSION_TABLE}'",
        )
    }


def dump(path: Path) -> list[Any]:
    """Every schema entry and row: "did anything change?"."""
    with closing(sqlite3.connect(path)) as conn:
        master = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
        data = [
            sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr)
            for kind, name, _sql in master
            if kind == "table"
        ]
    return [master, data]


def echo(step: StepContext, payload: dict[str, int]) -> dict[str, int]:
    return payload


def assert_workers_run_jobs(url: str) -> None:
    """A triggered run is processed, by ``process_one()`` and by a started worker."""
    with Durably(url, polling_interval=0.02) as instance:
        job = instance.job("echo")(echo)
        first = job.trigger({"n": 1})
        assert instance.process_one() is True
        done = job.get_run(first.id)
        assert done is not None
        assert done.status == "completed"
        second = job.trigger({"n": 2})
        instance.start()
        try:
            assert instance.wait_for_run(second.id, timeout=30).output == {"n": 2}
        finally:
            instance.stop()


# -- the host's `alembic upgrade heads` ------------------------------------------------


@pytest.mark.parametrize("how", ["command", "docs-recipe", "cli"])
def test_host_upgrade_heads_makes_durably_ready(tmp_path: Path, driver: str, how: str) -> None:
    path = tmp_path / "app.db"
    if how == "cli":
        host_alembic(make_host(tmp_path, path, durably_in_ini=True), "upgrade", "heads")
    elif how == "docs-recipe":
        run_python(docs_recipe(), make_host(tmp_path, path, durably_in_ini=False).parent)
    else:
        alembic_command.upgrade(
            host_config(make_host(tmp_path, path, durably_in_ini=False)), "heads"
        )

    # One history: the host's table holds both heads, durably keeps no table of its own.
    assert sorted(rows(path, f"SELECT version_num FROM {HOST_TABLE}")) == [HOST_REVISION, HEAD]
    assert VERSION_TABLE not in table_names(path)
    assert "users" in table_names(path)
    reference = tmp_path / "reference.db"
    with Durably(url_for("sqlite", reference)) as instance:
        instance.migrate()
    assert durably_schema(path) == durably_schema(reference)

    before = dump(path)
    with Durably(url_for(driver, path)) as instance:
        instance.migrate()
        instance.migrate()
    assert dump(path) == before, "migrate() is a no-op"
    assert_workers_run_jobs(url_for(driver, path))
    assert rows(path, "SELECT count(*) FROM users") == [0]


def test_durably_behind_in_the_host_history_asks_for_the_host_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    url = url_for("sqlite", path)
    config = host_config(make_host(tmp_path, path, durably_in_ini=False))
    # What an older durably left in the host's history; the host's own branch is current.
    alembic_command.upgrade(config, "durably_0004")
    alembic_command.upgrade(config, HOST_REVISION)
    before = dump(path)

    instance = Durably(url)
    try:
        instance.job("echo")(echo)
        for call in (instance.migrate, instance.start, instance.process_one):
            with pytest.raises(SchemaError, match=r"older.*alembic upgrade heads") as excinfo:
                call()
            assert "durably_0004" in str(excinfo.value)
        assert not instance.is_running
    finally:
        instance.close()
    assert dump(path) == before

    alembic_command.upgrade(config, "heads")
    assert_workers_run_jobs(url)


def test_a_newer_durably_in_the_host_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    alembic_command.upgrade(host_config(make_host(tmp_path, path, durably_in_ini=False)), "heads")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            f"UPDATE {HOST_TABLE} SET version_num = 'durably_9999' WHERE version_num = ?", (HEAD,)
        )
        conn.commit()
    before = dump(path)
    with Durably(url_for("sqlite", path)) as instance:
        for call in (instance.migrate, instance.process_one):
            with pytest.raises(SchemaError, match="newer"):
                call()
    assert dump(path) == before


def test_moving_durably_into_the_host_history(tmp_path: Path) -> None:
    """A database durably.migrate() made joins the host's history: stamp, then drop durably's table."""
    path = tmp_path / "app.db"
    url = url_for("sqlite", path)
    with Durably(url) as instance:
        instance.migrate()
        pending = instance.job("echo")(echo).trigger({"n": 7})
    config = host_config(make_host(tmp_path, path, durably_in_ini=False))
    alembic_command.stamp(config, "durably@head")

    # Recorded twice, the two records would drift apart: durably says which to drop.
    with Durably(url) as instance, pytest.raises(SchemaError, match=VERSION_TABLE):
        instance.process_one()

    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"DROP TABLE {VERSION_TABLE}")
    alembic_command.upgrade(config, "heads")
    assert sorted(rows(path, f"SELECT version_num FROM {HOST_TABLE}")) == [HOST_REVISION, HEAD]
    with Durably(url) as instance:
        instance.migrate()
        instance.job("echo")(echo)
        assert instance.process_one() is True
        run = instance.get_run(pending.id)
        assert run is not None
        assert run.status == "completed"


def test_tables_without_any_version_record_get_a_schema_error(tmp_path: Path) -> None:
    """E.g. a host env with its own ``version_table``: durably must not re-create its tables."""
    path = tmp_path / "app.db"
    url = url_for("sqlite", path)
    with Durably(url) as instance:
        instance.migrate()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"DROP TABLE {VERSION_TABLE}")
    before = dump(path)
    with Durably(url) as instance:
        for call in (instance.migrate, instance.process_one):
            with pytest.raises(SchemaError, match="records their revision"):
                call()
    assert dump(path) == before


# -- revision ids ------------------------------------------------------------------------


def test_alembic_version_location_is_the_directory_of_the_revisions() -> None:
    location = durably.alembic_version_location()
    assert isinstance(location, str)
    assert "alembic_version_location" in durably.__all__
    # In a checkout, the repository's revisions; the wheel's are checked in test_migrations.py.
    assert Path(location) == ROOT / "migrations" / "versions"


def test_revision_ids_are_unique_and_form_one_chain() -> None:
    """``NNNN_<slug>.py`` is revision ``durably_NNNN`` revising ``durably_<NNNN - 1>``."""
    revisions = sorted(SCRIPTS.walk_revisions(), key=lambda rev: rev.revision)
    assert revisions, "no revisions found"
    for number, rev in enumerate(revisions, start=1):
        assert rev.revision == f"durably_{number:04d}"
        assert Path(rev.path).name.startswith(f"{number:04d}_")
        previous = f"durably_{number - 1:04d}" if number > 1 else None
        assert rev.down_revision == previous
        # As written in the file (Alembic's branch_labels include the inherited label).
        assert rev.module.branch_labels == (("durably",) if number == 1 else None)
    assert SCRIPTS.get_heads() == [revisions[-1].revision]


def migrate_to(url: str, revision: str, recorded_as: str) -> None:
    """A database that an older durably left at ``revision``, which it called ``recorded_as``."""
    with Durably(url) as instance, instance.engine.begin() as conn:
        alembic_command.upgrade(alembic_config(conn), revision)
    path = Path(url.split(":///", 1)[1])
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = ?", (recorded_as,))
        conn.commit()


@pytest.mark.parametrize("old", ["0003", "0005"])
def test_a_database_recorded_under_an_old_id_is_upgraded(
    tmp_path: Path, driver: str, old: str
) -> None:
    path = tmp_path / "old.db"
    url = url_for(driver, path)
    migrate_to(url, f"durably_{old}", old)
    instance = Durably(url)
    try:
        instance.job("echo")(echo)
        with pytest.raises(SchemaError, match=rf"revision {old}\).*older.*migrate\(\)"):
            instance.process_one()
        instance.migrate()
        assert instance.process_one() is False
    finally:
        instance.close()
    assert rows(path, f"SELECT version_num FROM {VERSION_TABLE}") == [HEAD]
    reference = tmp_path / "reference.db"
    with Durably(url_for("sqlite", reference)) as fresh:
        fresh.migrate()
    assert durably_schema(path) == durably_schema(reference)


def test_the_checkout_alembic_cli_upgrades_a_database_under_an_old_id(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate_to(url_for("sqlite", path), "durably_0005", "0005")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    alembic = Path(sys.executable).with_name("alembic")
    command = [str(alembic)] if alembic.exists() else [sys.executable, "-m", "alembic"]
    result = subprocess.run(
        [*command, "-x", f"url=sqlite:///{path}", "upgrade", "durably@head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert rows(path, f"SELECT version_num FROM {VERSION_TABLE}") == [HEAD]
    with Durably(url_for("sqlite", path)) as instance:
        assert instance.process_one() is False  # the schema check passes
