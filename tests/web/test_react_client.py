"""The real ``@coji/durably-react`` 0.15.0 client against durably.web, over real HTTP.

``tests/web/client`` pins the npm packages (package.json, package-lock.json);
``make test`` installs them with ``npm ci``. ``drive.mjs`` renders the
hooks with react-test-renderer in Node (``eventsource`` stands in for the
browser's ``EventSource``): ``useJob`` triggers and follows runs through
``/subscribe``, ``useRuns`` lists them and refreshes from
``/runs/subscribe``, ``useRunActions`` reads, retriggers, cancels and
deletes. It prints what it saw as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Jobs

CLIENT = Path(__file__).parent / "client"
INSTALLED = CLIENT / "node_modules" / "@coji" / "durably-react" / "package.json"


def run_client(api: str, jobs: Jobs) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is needed for the React client test"
    assert INSTALLED.is_file(), "the npm client is not installed: `make test` runs npm ci"
    process = subprocess.Popen(
        [node, str(CLIENT / "drive.mjs"), api],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        leased = json.loads(process.stdout.readline() or "{}")
        assert "leased" in leased, process.stderr.read() if process.stderr else ""
        jobs.gate.set()
        process.stdin.write("open\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_durably_react_hooks_work_against_durably_web(api: str, jobs: Jobs) -> None:
    seen = run_client(api, jobs)
    greet = seen["greet"]
    assert greet["status"] == "completed"
    assert greet["output"] == {"greeting": "hello react"}
    assert greet["currentRunId"] == greet["runId"]
    assert [greet["runId"], "completed", True] in seen["listed"]
    assert seen["getRun"] == "completed"
    assert seen["getMissing"] is None  # 404 from /run reads as "no such run"
    assert seen["steps"] == [["name", "completed"]]
    assert seen["retriggered"] is True
    assert seen["cancelCompleted"] == f"Cannot cancel completed run: {greet['runId']}"
    assert seen["deleted"] is None
    assert seen["waited"]["output"] == {"greeting": "hello again"}
    assert seen["gated"] == {
        "output": "opened",
        "progress": {"current": 2, "total": 2, "message": "through the gate"},
        "logs": [["warn", "the gate opened", {"gate": "main"}]],
    }
