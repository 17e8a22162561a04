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


def _serve(command: list[str], db_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "DURABLY_DATABASE_URL": db_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_response(server: subprocess.Popen[str], method: str, url: str, body: Any) -> Any:
    """The answer to the first request the server takes (it may still be starting)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _http(method, url, body)
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def _stopped_by_sigterm(server: subprocess.Popen[str]) -> str:
    """SIGTERM, and the server's stderr once it exited gracefully."""
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it got
    return server.stderr.read() if server.stderr else ""


def _workers(db_url: str) -> list[Any]:
    from durably import Durably

    with Durably(db_url) as client:
        return client.get_workers()


def test_fastapi_example_under_uvicorn_runs_a_job_and_stops_on_sigterm(db_url: str) -> None:
    """durably.contrib.fastapi: the lifespan runs the engine; get_durably reaches it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)], db_url
    )
    try:
        status, created = _first_response(server, "POST", f"{base}/thumbnails?image=cat.png", None)
        assert status == 202
        done = _poll(lambda: _http("GET", f"{base}/thumbnails/{created['id']}")[1])
        assert done == {"status": "completed", "output": ["cat.png@64w", "cat.png@256w"]}
        stderr = _stopped_by_sigterm(server)
    finally:
        if server.poll() is None:
            server.kill()
    assert "Application shutdown complete" in stderr
    assert _workers(db_url) == []  # the engine stopped and unregistered


def test_flask_example_under_gunicorn_runs_a_job_and_stops_on_sigterm(db_url: str) -> None:
    """durably.contrib.flask: each gunicorn worker builds the app and runs its own engine."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", "examples.wsgi_app:create_app()"]
    server = _serve([*command, "--bind", f"127.0.0.1:{port}", "--workers", "2"], db_url)
    try:
        status, created = _first_response(
            server, "POST", f"{base}/signups", {"email": "ada@example.com"}
        )
        assert status == 202
        done = _poll(lambda: _http("GET", f"{base}/signups/{created['id']}")[1])
        assert done["output"]["receipt"] == "sent 'Welcome!' to ada@example.com"
        _stopped_by_sigterm(server)
    finally:
        if server.poll() is None:
            server.kill()
    assert _workers(db_url) == []


def test_flask_durably_worker_runs_jobs_until_sigterm(db_url: str) -> None:
    from durably import Durably

    worker = _serve(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "examples.wsgi_app:create_app()",
            "durably",
            "worker",
        ],
        db_url,
    )
    try:
        with Durably(db_url) as client:
            client.migrate()
            deadline = time.monotonic() + 30
            while not client.get_workers():  # migrated and started
                assert worker.poll() is None, worker.communicate()[1]
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.1)
            job = client.job("welcome")(lambda step, input: None)  # triggers only
            run = job.trigger({"email": "bo@example.com"})
            done = client.wait_for_run(run.id, timeout=30)
        assert done.output["receipt"] == "sent 'Welcome!' to bo@example.com"
        stderr = _stopped_by_sigterm(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "stopped" in stderr
    assert _workers(db_url) == []


def test_opentelemetry_example_prints_one_trace_from_the_request_to_the_steps(
    db_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "opentelemetry_tracing.py")],
        env={**os.environ, "DURABLY_DATABASE_URL": db_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "completed {'account': 7, 'mail': 'welcome sent to ada@example.com'}" in result.stderr
    spans = {span["name"]: span for span in map(json.loads, result.stdout.splitlines())}
    assert sorted(spans) == [
        "POST /signup",
        "durably.run signup",
        "durably.step create-account",
        "durably.step send-welcome",
        "durably.trigger signup",
        "smtp send",
    ]
    assert len({span["context"]["trace_id"] for span in spans.values()}) == 1

    def parent(name: str) -> str:
        parents = [
            s["name"] for s in spans.values() if s["context"]["span_id"] == spans[name]["parent_id"]
        ]
        return parents[0] if parents else ""

    assert parent("durably.trigger signup") == "POST /signup"
    assert parent("durably.run signup") == "durably.trigger signup"
    assert parent("durably.step create-account") == "durably.run signup"
    assert parent("durably.step send-welcome") == "durably.run signup"
    assert parent("smtp send") == "durably.step send-welcome"
    assert spans["durably.run signup"]["kind"] == "SpanKind.CONSUMER"


def test_prometheus_example_serves_the_worker_s_metrics_until_sigterm(
    db_url: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "prometheus_worker.py")],
        env={**os.environ, "DURABLY_DATABASE_URL": db_url, "METRICS_PORT": str(port)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def scraped() -> str:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
                        text = reply.read().decode()
                    if 'durably_runs_completed_total{job="resize",queue="default"} 3.0' in text:
                        return text
                except urllib.error.URLError:
                    pass
                assert time.monotonic() < deadline, "the worker's metrics never counted 3 runs"
                assert worker.poll() is None, worker.communicate()
                time.sleep(0.2)

        text = scraped()
        assert 'durably_runs{status="pending"} 0.0' in text
        assert "durably_step_duration_seconds_count" in text
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr
    finally:
        if worker.poll() is None:
            worker.kill()
