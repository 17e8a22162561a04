"""Real processes: ``manage.py durably_worker`` runs what views enqueue, until SIGTERM.

The example shop (examples/django_project) runs as documented: ``runserver``
and ``durably_worker`` side by side, driven over HTTP. The tests' project
enqueues from a view in this process and reads results a worker process wrote.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import Durably
from tests.django.django_harness import PROJECT, SETTINGS, project_env

pytestmark = pytest.mark.slow


def manage(
    *args: str, data_dir: Path, settings: str = SETTINGS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=project_env(data_dir, settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def start(*args: str, data_dir: Path, log: Path, settings: str = SETTINGS) -> subprocess.Popen[str]:
    """``manage.py *args`` in the background, its output into ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT,
            env=project_env(data_dir, settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def http(method: str, url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Started processes, killed if a test left them running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("driver", ["sqlite", "postgresql"])
def test_the_example_shop_runs_tasks_and_jobs_behind_runserver(
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
    driver: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As its settings say; on PostgreSQL, durably's tables are in the project's database."""
    settings, durably_url = "project.settings", f"sqlite:///{tmp_path / 'durably.sqlite3'}"
    if driver == "postgresql":
        durably_url = request.getfixturevalue("postgres_db")
        monkeypatch.setenv("SHOP_POSTGRES_URL", durably_url)
        settings = "tests.django.shop_on_postgresql"
    migrated = manage("durably_migrate", data_dir=tmp_path, settings=settings)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "durably: migrated"
    worker_log, server_log = tmp_path / "worker.log", tmp_path / "server.log"
    worker = start("durably_worker", data_dir=tmp_path, settings=settings, log=worker_log)
    port = free_port()
    server_args = ("runserver", "--noreload", f"127.0.0.1:{port}")
    server = start(*server_args, data_dir=tmp_path, settings=settings, log=server_log)
    processes += [worker, server]
    base = f"http://127.0.0.1:{port}"

    def first_order() -> Any:
        assert server.poll() is None, server_log.read_text()
        try:
            return http("POST", f"{base}/orders?total=12.50")
        except (urllib.error.URLError, ConnectionError):
            return None

    status, created = until(first_order, "runserver to answer")
    assert status == 202
    assert created["status"] == "READY"
    done = until(
        lambda: (
            (found := http("GET", f"{base}/tasks/{created['task']}")[1])["status"] == "SUCCESSFUL"
            and found
        ),
        "the worker to run the task",
    )
    assert done == {
        "status": "SUCCESSFUL",
        "errors": [],
        "return_value": {"order": "1", "receipt": "Order 1: 12.50 EUR, paid"},
    }
    assert http("GET", f"{base}/tasks/01M0000000000000000000NONE") == (
        404,
        {"error": "no such task"},
    )
    status, report = http("POST", f"{base}/reports?total=1&total=2.5")
    assert status == 202
    finished = until(
        lambda: (
            (found := http("GET", f"{base}/runs/{report['run']}")[1])["status"] == "completed"
            and found
        ),
        "the worker to run the job from shop/jobs.py",
    )
    assert finished["output"] == {"orders": 2, "revenue": 3.5}

    assert stop(worker) == 0, worker_log.read_text()
    stop(server)
    assert "stopped" in worker_log.read_text()
    with Durably(durably_url) as client:
        assert client.get_workers() == []  # it deregistered on the way out
        assert {run.job_name for run in client.get_runs()} == {"django.tasks", "daily-report"}


def test_a_view_enqueues_and_a_worker_process_runs_it(
    data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    from django.test import Client

    from durably.contrib.django import get_durably
    from tests.django.testapp.tasks import RefusedError, refuse

    try:
        from django.tasks import task_backends
    except ImportError:  # Django 5.2: the django-tasks backport
        from django_tasks import task_backends

    log = tmp_path / "worker.log"
    worker = start("durably_worker", data_dir=data_dir, log=log)
    processes.append(worker)
    durably = get_durably()
    [registered] = until(durably.get_workers, "the worker to start")

    response = Client().post("/orders?total=7")
    assert response.status_code == 202
    result_id = response.json()["task"]
    backend = task_backends["default"]
    done = until(lambda: (found := backend.get_result(result_id)).is_finished and found, "the run")
    assert done.return_value["receipt"].endswith(": 7 EUR, paid")
    assert done.worker_ids == [registered.id]
    assert durably.worker_id not in done.worker_ids  # this process ran nothing

    refused = refuse.enqueue("closed")
    failed = until(lambda: (found := refuse.get_result(refused.id)).is_finished and found, "it")
    assert failed.status == "FAILED"
    [error] = failed.errors
    assert error.exception_class is RefusedError
    assert "RefusedError: closed" in error.traceback

    assert stop(worker) == 0, log.read_text()
    assert durably.get_workers() == []


def test_a_task_whose_worker_was_killed_is_finished_by_another(
    data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    from durably.contrib.django import get_durably
    from tests.django.testapp.tasks import stall_once

    durably = get_durably()
    marker = tmp_path / "started"
    first = start("durably_worker", data_dir=data_dir, log=tmp_path / "first.log")
    processes.append(first)
    [killed] = until(durably.get_workers, "the first worker to start")
    result = stall_once.enqueue(str(marker))
    until(marker.exists, "the first worker to call the task")
    running = until(
        lambda: (found := stall_once.get_result(result.id)).worker_ids and found,
        "the running call to be recorded (at the worker's next heartbeat)",
    )
    assert running.status == "RUNNING"
    assert running.worker_ids == [killed.id]
    first.kill()  # SIGKILL: no hand-back, the lease must run out
    first.wait()

    second = start("durably_worker", data_dir=data_dir, log=tmp_path / "second.log")
    processes.append(second)
    done = until(
        lambda: (found := stall_once.get_result(result.id)).is_finished and found, "the takeover"
    )
    assert done.status == "SUCCESSFUL"
    assert done.return_value == "finished by the next worker"
    assert done.errors == []
    assert done.attempts == 2
    assert done.worker_ids[0] == killed.id
    assert done.worker_ids[1] != killed.id
    assert stop(second) == 0


def test_a_bad_option_is_one_line_without_a_traceback(data_dir: Path) -> None:
    ran = manage("durably_worker", "--queue", "", data_dir=data_dir)
    assert ran.returncode == 1
    assert ran.stderr.startswith("CommandError: A queue name must be")
    assert len(ran.stderr.strip().splitlines()) == 1
