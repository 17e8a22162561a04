"""The ``durably`` command line, run as the installed executable against real databases.

Each command runs in a subprocess, as an operator runs it: on a SQLite file, on
the remote libSQL test server and on PostgreSQL, from a directory without the app's code
(``--url`` or the environment name the database). ``--json`` output is parsed;
exit codes are 0 done, 1 not found or refused, 2 a usage mistake, and a
user's mistake is one line on stderr, never a traceback. A subprocess costs
about half a second, so each test runs several commands on one database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from durably import Durably, StepContext, __version__, testing
from tests.conftest import REMOTE_TOKEN

DURABLY = Path(sys.executable).with_name("durably")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


@pytest.fixture(params=["sqlite", "remote", "postgresql"])
def driver(request: pytest.FixtureRequest) -> str:
    """A local file, a remote libSQL server and PostgreSQL (the local libSQL driver adds
    nothing to the CLI)."""
    return str(request.param)


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(db_url: str, driver: str, tmp_path: Path) -> Cli:
    """Run ``durably ARGS`` in an empty directory, the database named by the environment:
    ``DURABLY_DATABASE_URL`` for a file or PostgreSQL, Turso's two variables for the remote
    server."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    named = {"DURABLY_DATABASE_URL": db_url}
    if driver == "remote":
        token = f"&auth_token={REMOTE_TOKEN}"
        assert token in db_url
        named = {"TURSO_DATABASE_URL": db_url.replace(token, ""), "TURSO_AUTH_TOKEN": REMOTE_TOKEN}

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "TURSO_"))}
        environ.update(named)
        environ.update(env or {})
        return subprocess.run(
            [str(DURABLY), *args],
            cwd=workdir,
            env=environ,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    return run


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """Exit ``code`` with one line on stderr that says ``words``, and no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert all(line.startswith("durably: ") for line in lines), result.stderr


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def explode(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def app(make_durably: Callable[..., Durably]) -> Durably:
    """The app's side: its jobs, a failed, a completed and a pending run, a schedule."""
    durably = make_durably()

    @durably.job("import")
    def import_job(step: StepContext, input: Any) -> Any:
        step.run("read", lambda: date(2026, 12, 6))
        step.progress(1, 2, "read")
        step.log.info("importing", {"rows": 3})
        return step.run("write", lambda: explode(input["why"]) if input.get("why") else 2)

    durably.schedule("hourly", import_job, every=3600, input={})
    durably.get_schedules()  # stores it
    import_job.trigger({"why": "disk full"}, labels={"tenant": "acme"})
    import_job.trigger({}, labels={"tenant": "globex"})
    assert durably.process_until_idle() == 2
    import_job.trigger({}, delay=3600)
    return durably


def test_reading_commands(app: Durably, cli: Cli, driver: str) -> None:
    listed = ok_json(cli("runs", "list", "--json"))
    assert [run["status"] for run in listed] == ["pending", "completed", "failed"]
    (failed,) = ok_json(
        cli("runs", "list", "--status", "failed", "--label", "tenant=acme", "--json")
    )
    assert failed["error"] == "ValueError: disk full"
    assert ok_json(cli("runs", "list", "--job", "other", "--json")) == []
    assert len(ok_json(cli("runs", "list", "--limit", "1", "--json"))) == 1

    shown = ok_json(cli("runs", "show", failed["id"], "--json"))
    assert shown["run"]["id"] == failed["id"]
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [
        ("read", "completed"),
        ("write", "failed"),
    ]
    # A value JSON has no type for shows as it is stored.
    assert shown["steps"][0]["output"] == {"$type": "date", "value": "2026-12-06"}
    assert shown["run"]["progress"] == {"current": 1, "total": 2, "message": "read"}
    assert [(log["message"], log["data"]) for log in shown["logs"]] == [("importing", {"rows": 3})]
    failed_attempt = shown["attempts"][-1]
    assert failed_attempt["status"] == "failed"
    assert "ValueError: disk full" in failed_attempt["traceback"]

    stats = ok_json(cli("stats", "--json"))
    assert (stats["pending"], stats["running"], stats["stale"]) == (1, 0, 0)
    assert stats["oldest_pending_age"] >= 0
    (schedule,) = ok_json(cli("schedules", "list", "--json"))
    assert (schedule["name"], schedule["job_name"], schedule["every"]) == ("hourly", "import", 3600)

    app.start()
    try:
        wait_for(lambda: app.get_workers() != [], "the worker registered")
        workers = ok_json(cli("workers", "--json"))
    finally:
        app.stop()
    assert [(w["id"], w["is_stale"]) for w in workers] == [(app.worker_id, False)]

    # A run whose worker died: leased, its lease expired; stale, not running.
    stuck = app.get_job("import").trigger({})  # type: ignore[union-attr]
    assert testing.claim(app, "a-worker-that-died") is not None
    testing.expire_lease(app, stuck.id)
    stats = ok_json(cli("stats", "--json"))
    assert (stats["pending"], stats["running"], stats["stale"]) == (1, 0, 1)

    if driver == "sqlite":  # the tables people read: aligned columns, the traceback
        table = cli("runs", "list").stdout.splitlines()
        assert table[0].split()[:3] == ["ID", "JOB", "STATUS"]
        assert {line.index("import") for line in table[1:]} == {table[0].index("JOB")}
        assert "leased (lease expired)" in cli("runs", "list", "--status", "leased").stdout
        human = cli("runs", "show", failed["id"])
        assert human.returncode == 0
        assert "Traceback (most recent call last)" in human.stdout


def test_changing_commands(app: Durably, cli: Cli) -> None:
    failed, completed = (app.get_runs(status=s)[0] for s in ("failed", "completed"))
    (pending,) = app.get_runs(status="pending")

    assert ok_json(cli("runs", "retry", "--all-failed", "--job", "import", "--json")) == {
        "retried": [failed.id]
    }
    assert app.get_run(failed.id).status == "pending"  # type: ignore[union-attr]
    result = cli("runs", "cancel", failed.id, pending.id, completed.id)
    refused(result, 1, f"Cannot cancel completed run: {completed.id}")
    assert result.stdout.split() == ["cancelled", failed.id, "cancelled", pending.id]
    assert ok_json(cli("runs", "retry", failed.id, "--json")) == {"retried": [failed.id]}

    again = ok_json(cli("runs", "retrigger", completed.id, "--json"))
    assert (again["job_name"], again["status"], again["labels"]) == (
        "import",
        "pending",
        {"tenant": "globex"},
    )
    assert ok_json(cli("runs", "delete", completed.id, "--json")) == {"deleted": [completed.id]}
    refused(cli("runs", "delete", completed.id), 1, f"Run not found: {completed.id}")
    assert ok_json(cli("purge", "--older-than", "1m", "--json"))["purged"] == 0

    assert ok_json(cli("schedules", "pause", "hourly", "--json"))["paused"] is True
    assert ok_json(cli("schedules", "resume", "hourly", "--json"))["paused"] is False
    triggered = ok_json(cli("schedules", "trigger", "hourly", "--json"))
    assert triggered["schedule"] == "hourly"
    refused(cli("schedules", "pause", "nightly"), 1, "Schedule not found: nightly")
    assert ok_json(cli("schedules", "delete", "hourly", "--json")) == {"deleted": "hourly"}
    assert ok_json(cli("schedules", "list", "--json")) == []


@pytest.mark.parametrize("driver", ["sqlite"])
def test_mistakes_are_one_line_and_an_exit_code(
    durably: Durably, cli: Cli, tmp_path: Path, db_url: str
) -> None:
    version = cli("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"durably {__version__}")
    refused(cli("runs", "show", "01NOPE"), 1, "Run not found: 01NOPE")
    refused(cli("runs", "list", "--status", "lost"), 2, "invalid choice: 'lost'")
    refused(cli("runs", "list", "--label", "tenant"), 2, "--label wants KEY=VALUE")
    refused(cli("runs", "retry"), 2, "give run ids or --all-failed")
    refused(cli("purge", "--older-than", "soon"), 2, 'Invalid duration for --older-than: "soon"')
    refused(cli("runs", "list", "--url", "mysql://db/app"), 2, "Unsupported database URL")
    missing = tmp_path / "typo.db"
    refused(cli("stats", "--url", f"sqlite:///{missing}"), 1, f"No database file at '{missing}'")
    assert not missing.exists(), "a reading command creates no file"
    no_dir = tmp_path / "no" / "such" / "dir" / "app.db"
    refused(cli("migrate", "--url", f"sqlite:///{no_dir}"), 1, f"its directory '{no_dir.parent}'")
    # psycopg's message has its hint on a line of its own: still one line here.
    nobody_listens = "postgresql+psycopg://durably@127.0.0.1:1/app"
    unreachable = cli("stats", "--url", nobody_listens)
    refused(unreachable, 1, "Connection refused")
    assert len(unreachable.stderr.splitlines()) == 1, unreachable.stderr
    refused(cli("stats", env={"DURABLY_DATABASE_URL": ""}), 2, "No database configured")
    both = cli("stats", "--app", "app:durably", "--url", db_url)
    refused(both, 2, "give --url or --app, not both")


@pytest.mark.parametrize("driver", ["sqlite"])
def test_worker_names_what_is_wrong_with_its_app(cli: Cli, tmp_path: Path) -> None:
    workdir = tmp_path / "elsewhere"
    (workdir / "myapp.py").write_text(
        "from durably import Durably\n\ndurably = Durably('sqlite:///app.db')\nnumber = 7\n"
    )
    (workdir / "broken.py").write_text("import not_installed_anywhere\n")
    for app, words in [
        ("nomodule:durably", "cannot import 'nomodule': no such module"),
        ("broken:durably", "it imports 'not_installed_anywhere', which is not installed"),
        ("myapp:missing", "module 'myapp' has no attribute 'missing'"),
        ("myapp:number", "myapp:number is a int, not a durably.Durably instance"),
        ("myapp", "expected MODULE:ATTRIBUTE"),
    ]:
        refused(cli("worker", app), 2, words)
    assert not (workdir / "app.db").exists()
