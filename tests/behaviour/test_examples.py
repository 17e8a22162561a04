"""The ASGI and WSGI examples, driven by real HTTP requests.

The ASGI app (Starlette) runs with its lifespan through Starlette's
in-process test client, so the asyncio engine starts and stops as under
uvicorn; the WSGI app (Flask) through Flask's test client, with the thread
engine its factory starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def load_example(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], ModuleType]]:
    """Import an example afresh, pointed at the test's database."""
    monkeypatch.setenv("DURABLY_DATABASE_URL", db_url)
    loaded: list[ModuleType] = []

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(
            f"example_{name}", ROOT / "examples" / f"{name}.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.durably.close()
        sys.modules.pop(module.__name__, None)


def _poll(get: Callable[[], dict[str, Any]], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = get()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_asgi_example_runs_a_job_on_the_asyncio_engine(
    load_example: Callable[[str], ModuleType],
) -> None:
    example = load_example("asgi_app")
    with TestClient(example.app) as client:
        assert example.durably.engine_name == "asyncio"
        created = client.post("/reports", json={"pages": 3})
        assert created.status_code == 202
        run_id = created.json()["id"]
        done = _poll(lambda: client.get(f"/reports/{run_id}").json())
        assert client.post("/reports", json={"pages": "many"}).status_code == 400
        assert client.get("/reports/nope").status_code == 404
    assert not example.durably.is_running  # the lifespan stopped the engine
    assert done["status"] == "completed"
    assert done["output"] == {"pages": 3, "summary": "page 1, page 2, page 3"}
    assert done["progress"] == {"current": 3, "total": 3}


def test_wsgi_example_runs_a_job_on_the_thread_engine(
    load_example: Callable[[str], ModuleType],
) -> None:
    example = load_example("wsgi_app")
    app = example.create_app()
    example.create_app()  # a second app in the same process does not start a second engine
    assert example.durably.engine_name == "thread"
    client = app.test_client()
    created = client.post("/signups", json={"email": "ada@example.com"})
    assert created.status_code == 202
    run_id = created.get_json()["id"]
    done = _poll(lambda: client.get(f"/signups/{run_id}").get_json())
    assert done["status"] == "completed"
    assert done["output"]["receipt"] == "sent 'Welcome!' to ada@example.com"
    assert client.post("/signups", json={}).status_code == 400
    assert client.get("/signups/nope").status_code == 404


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_asgi_example_under_uvicorn_stops_gracefully_on_sigterm(db_url: str) -> None:
    """The documented command, a real server on 127.0.0.1, and SIGTERM ending its lifespan."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.asgi_app:app", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "DURABLY_DATABASE_URL": db_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, created = _http("POST", f"{base}/reports", {"pages": 2})
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        assert status == 202
        done = _poll(lambda: _http("GET", f"{base}/reports/{created['id']}")[1])
        assert done["output"] == {"pages": 2, "summary": "page 1, page 2"}
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it got.
        assert server.wait(30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    stderr = server.stderr.read() if server.stderr else ""
    assert "Application shutdown complete" in stderr
