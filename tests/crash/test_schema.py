"""Worker processes and schemas: racing migrations, and a schema from the future.

tests/behaviour/test_migrations.py already has four processes calling ``migrate()`` at
once on fresh files, and the in-process refusal of a newer schema. Here: the
``durably`` command against a database migrated by a newer durably refuses
to start (exit status 1, a ``SchemaError`` message) and changes nothing.
(Four ``durably worker --migrate`` processes racing on a fresh file are part
of test_competing.py.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from durably.schema import VERSION_TABLE

from .harness import ROOT, WAIT, Cluster, query, write

pytestmark = pytest.mark.slow

FUTURE = "ffff_from_the_future"


def test_worker_and_migrate_commands_refuse_a_newer_schema(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    client = cluster.client()
    client.migrate()
    write(
        client,
        lambda conn: conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '{FUTURE}'"),
    )

    commands = {
        "worker": ["worker", "tests.crash.jobs:durably"],
        "worker --migrate": ["worker", "tests.crash.jobs:durably", "--migrate"],
        "migrate": ["migrate", "--url", cluster.db_url],
    }
    for name, args in commands.items():
        result = subprocess.run(
            [sys.executable, "-m", "durably", *args],
            cwd=ROOT,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert f"revision {FUTURE}" in result.stderr, (name, result.stderr)
        assert "newer than this version of durably" in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)

    assert query(client, f"SELECT version_num FROM {VERSION_TABLE}") == [(FUTURE,)]
    assert query(client, "SELECT count(*) FROM durably_workers") == [(0,)], "nobody registered"
