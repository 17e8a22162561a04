"""``durably dashboard``: the real executable serves the HTTP API and dashboard on a port."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from durably import Durably

DURABLY = Path(sys.executable).with_name("durably")


@pytest.fixture(params=["sqlite", "postgresql"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(db_url: str) -> str:
    """A migrated database with one completed run, as ``URL#RUN_ID``."""
    with Durably(db_url) as durably:
        durably.migrate()
        durably.job("report")(lambda step, input: "done")
        run = durably.get_job("report").trigger({"month": 11})  # type: ignore[union-attr]
        assert durably.process_until_idle() == 1
    return db_url + "#" + run.id


def _serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [str(DURABLY), "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("durably dashboard at http://"), (line, process.stderr)
    return process, line.split()[3]


def _request(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    return status, (json.loads(text) if text.startswith(("{", "[")) else text)


def test_the_dashboard_serves_the_api_and_allows_actions_on_localhost(database: str) -> None:
    url, run_id = database.split("#")
    process, base = _serve("--url", url)
    try:
        status, page = _request(base)
        assert status == 200
        assert "<html" in page.lower()
        status, runs = _request(base + "runs")
        assert status == 200
        assert [(run["id"], run["status"]) for run in runs] == [(run_id, "completed")]
        status, _ = _request(base + "run?runId=" + run_id, method="DELETE")
        assert status == 200  # bound to localhost: the actions are allowed
        assert _request(base + "runs") == (200, [])
    finally:
        process.terminate()
        process.wait(10)


def test_on_another_address_the_actions_need_allow_unauthenticated(database: str) -> None:
    url, run_id = database.split("#")
    process, base = _serve("--url", url, "--host", "0.0.0.0")
    try:
        base = base.replace("0.0.0.0", "127.0.0.1")
        assert _request(base + "runs")[0] == 200  # reading is open
        status, body = _request(base + "run?runId=" + run_id, method="DELETE")
        assert status == 403
        assert "error" in body
    finally:
        process.terminate()
        process.wait(10)


def test_a_missing_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(DURABLY), "dashboard", "--url", f"sqlite:///{tmp_path / 'none.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("durably: No database file at")
    assert "Traceback" not in result.stderr
