"""Runs the real Turso/libSQL clients' scenario scripts (tests/hrana/clients/*.mjs) against the
test server, and reads back what they did.

The npm packages are pinned by tests/hrana/clients/package-lock.json; `make test` installs them
with `npm ci` (the Makefile's HRANA_CLIENTS rule). Each script prints one JSON object
{scenario: outcome}; an outcome that failed is {"error": {"name", "code", "message"}}, exactly as
the client raised it to its caller.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.hrana.process import Server

CLIENTS = Path(__file__).parent / "clients"
TOKEN = "conformance-token"
# Short, so that the expiry scenarios wait seconds, not tens of seconds; every other scenario
# uses a stream for milliseconds.
EXPIRY_SECONDS = 1
JsonObj = dict[str, Any]


def installed(package: str) -> Path:
    """The installed package.json of an npm package of tests/hrana/clients."""
    path = CLIENTS / "node_modules" / package / "package.json"
    assert path.is_file(), f"{package} is not installed: `make test` runs npm ci in {CLIENTS}"
    return path


def pinned_version(package: str) -> str:
    """The version package.json pins (exact, no range) and that node_modules holds."""
    wanted = json.loads((CLIENTS / "package.json").read_text())["dependencies"][package]
    have = json.loads(installed(package).read_text())["version"]
    assert have == wanted, f"{package}: {have} installed, {wanted} pinned: run make test"
    return str(have)


def run_script(script: str, server: Server) -> JsonObj:
    """``node clients/SCRIPT`` against ``server``; returns its {scenario: outcome}."""
    node = shutil.which("node")
    assert node, "node is needed for the conformance tests (make test installs it)"
    env = {
        **os.environ,
        "HRANA_URL": server.url,
        "HRANA_TOKEN": server.token or "",
        "HRANA_EXPIRY_MS": str(EXPIRY_SECONDS * 1000),
    }
    done = subprocess.run(
        [node, str(CLIENTS / script)],
        cwd=CLIENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def requests_seen(server: Server) -> set[tuple[str, str]]:
    """(endpoint, request type) of every request in the server's trace; a cursor counts as
    ("/v3/cursor", "batch"), with ("/v3/cursor", "condition") if a step had a condition."""
    seen: set[tuple[str, str]] = set()
    for event in server.trace():
        path = event.get("path", "")
        for request in event.get("requests", []):
            seen.add((path, request["type"]))
        if "steps" in event and path.endswith("/cursor"):
            seen.add((path, "batch"))
            if event.get("conds"):
                seen.add((path, "condition"))
    return seen


def error(outcome: JsonObj) -> JsonObj:
    """The error of a scenario step that had to fail."""
    assert "error" in outcome, f"expected an error, got {outcome}"
    return dict(outcome["error"])


def big(value: int) -> JsonObj:
    """How the scripts write a bigint."""
    return {"bigint": str(value)}


def blob(data: bytes) -> JsonObj:
    """How the scripts write bytes."""
    return {"blob_hex": data.hex()}
