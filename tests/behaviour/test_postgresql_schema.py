"""durably's revisions on PostgreSQL: the schema of ``durably.schema``, partial indexes included.

The same Alembic revisions serve SQLite and PostgreSQL. On the session's
PostgreSQL server they must make exactly what ``metadata.create_all`` makes
(predicates of partial indexes too), from ``migrate()`` and from
``alembic upgrade head`` alike, and go down and up again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from durably import Durably
from durably.schema import metadata
from tests.postgres.server import Server

ROOT = Path(__file__).resolve().parents[2]
VERSION_TABLE = "durably_alembic_version"


def schema_of(url: str) -> dict[str, Any]:
    """durably's columns and index definitions as the server reports them."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT table_name, column_name, data_type, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_name LIKE 'durably\\_%' "
                    "AND table_name <> :version ORDER BY 1, 2"
                ),
                {"version": VERSION_TABLE},
            ).all()
            indexes = conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename LIKE 'durably\\_%' AND tablename <> :version ORDER BY 1"
                ),
                {"version": VERSION_TABLE},
            ).all()
            sequences = conn.execute(
                sa.text(
                    "SELECT sequencename, data_type, max_value FROM pg_sequences "
                    "WHERE sequencename LIKE 'durably\\_%' ORDER BY 1"
                )
            ).all()
    finally:
        engine.dispose()
    return {
        "columns": [tuple(c) for c in columns],
        "indexes": [tuple(i) for i in indexes],
        "sequences": [tuple(s) for s in sequences],
    }


def alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _created_by_metadata(postgres_server: Server) -> str:
    url = postgres_server.url(postgres_server.create_database())
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    return url


def test_migrate_makes_what_the_metadata_makes(postgres_db: str, postgres_server: Server) -> None:
    with Durably(postgres_db) as instance:
        instance.migrate()
        with instance.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, metadata)
    assert [d for d in diffs if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)] == []
    migrated = schema_of(postgres_db)
    assert migrated == schema_of(_created_by_metadata(postgres_server))
    partial = [name for name, definition in migrated["indexes"] if " WHERE " in definition]
    assert len(partial) == sum(
        1
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["postgresql"]["where"] is not None
    )
    assert len(partial) >= 5


def test_row_counters_are_64_bit_and_never_run_out(postgres_db: str) -> None:
    """Steps, attempts, logs and queue claims are numbered by sequences that are never
    reset by purging: 32 bits would run out on a busy server."""
    with Durably(postgres_db) as instance:
        instance.migrate()
    schema = schema_of(postgres_db)
    ids = {table: kind for table, column, kind, *_ in schema["columns"] if column == "id"}
    counted = ("durably_logs", "durably_queue_claims", "durably_step_attempts", "durably_steps")
    assert {table: ids[table] for table in counted} == dict.fromkeys(counted, "bigint")
    assert schema["sequences"] == [
        (f"{table}_id_seq", "bigint", 2**63 - 1) for table in sorted(counted)
    ]


def test_alembic_cli_upgrades_down_and_up_again(postgres_db: str) -> None:
    upgraded = alembic_cli(postgres_db, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    first = schema_of(postgres_db)
    assert first["columns"]
    downgraded = alembic_cli(postgres_db, "downgrade", "base")
    assert downgraded.returncode == 0, downgraded.stderr
    assert schema_of(postgres_db) == {"columns": [], "indexes": [], "sequences": []}
    again = alembic_cli(postgres_db, "upgrade", "head")
    assert again.returncode == 0, again.stderr
    assert schema_of(postgres_db) == first
    with Durably(postgres_db) as instance:
        instance.migrate()  # the CLI and migrate() share one history: nothing to do
        assert instance.process_one() is False


def test_the_command_line_migrates_and_lists_runs_on_a_server(postgres_db: str) -> None:
    def durably_cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
        return subprocess.run(
            [sys.executable, "-m", "durably", *args, "--url", postgres_db],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    migrated = durably_cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    with Durably(postgres_db) as instance:
        run = instance.job("echo")(lambda step, input: input).trigger({"n": 1})
    listed = durably_cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert run.id in listed.stdout
