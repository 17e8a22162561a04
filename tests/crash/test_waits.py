"""Durable waits across real worker processes: a sleep outlives ``kill -9`` of its worker, and a
signal sent while no worker runs is taken up by a worker process started later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from durably import Durably, RunStatus, WaitStatus

from .harness import ROOT, WAIT, Worker, url_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.both_engines]  # the worker processes' engine

APP = "tests.crash.waits_app:durably"


@pytest.fixture
def processes(
    tmp_path: Path, driver: str, engine: str, request: pytest.FixtureRequest
) -> Iterator[_Processes]:
    if driver == "postgresql":
        url = str(request.getfixturevalue("postgres_db"))
    else:
        url = url_for(driver, tmp_path / "durably.db")
    made = _Processes(tmp_path, url, engine)
    yield made
    made.close()


class _Processes:
    """Worker processes of ``waits_app`` on one database, and a client that runs no worker."""

    def __init__(self, directory: Path, url: str, engine: str) -> None:
        self.dir, self.url, self.engine = directory, url, engine
        self.log = directory / "effects.log"
        self.log.touch()
        self.workers: list[Worker] = []
        self.client = Durably(url, polling_interval=0.05)
        self.client.migrate()
        for name in ("sleeper", "approval"):
            self.client.job(name)(_never_run)

    def start_worker(self) -> Worker:
        output = self.dir / f"worker-{len(self.workers)}.out"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "CRASH_DB_URL": self.url,
            "CRASH_LOG": str(self.log),
        }
        with output.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "durably", "worker", APP, "--engine", self.engine],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, output)
        self.workers.append(worker)
        return worker

    def effects(self, run_id: str) -> list[tuple[str, int]]:
        """(step, pid) of every step execution of the run, in order."""
        lines = self.log.read_text().splitlines()
        return [(step, int(pid)) for run, step, pid in map(str.split, lines) if run == run_id]

    def status_is(self, run_id: str, status: RunStatus) -> Callable[[], bool]:
        def check() -> bool:
            run = self.client.get_run(run_id)
            return run is not None and run.status == status

        return check

    def diagnostics(self) -> str:
        return "\n".join(f"--- worker {w.pid}:\n{w.text()[-2000:]}" for w in self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.client.close()


def _never_run(step: Any, input: Any) -> None:
    raise AssertionError("the client registers jobs only to trigger them")


def test_a_sleep_outlives_kill_9_and_wakes_at_its_original_time(processes: _Processes) -> None:
    job = processes.client.get_job("sleeper")
    assert job is not None
    run = job.trigger({"seconds": 1.5})
    first = processes.start_worker()
    wait_for(processes.status_is(run.id, RunStatus.WAITING), "the run asleep", WAIT)
    first.signal(signal.SIGKILL)
    first.wait()

    second = processes.start_worker()
    try:
        done = processes.client.wait_for_run(run.id, timeout=WAIT)
    except TimeoutError:
        raise AssertionError(processes.diagnostics()) from None

    assert done.output == {"finished_by": second.pid}
    assert processes.effects(run.id) == [("before", first.pid), ("after", second.pid)]
    (nap,) = processes.client.get_waits(run.id)
    assert nap.status == WaitStatus.TIMED_OUT
    assert nap.deadline_at == nap.created_at + timedelta(seconds=1.5)
    assert nap.resolved_at == nap.deadline_at, "it woke at the time fixed before the crash"


def test_a_signal_sent_with_every_worker_stopped_resumes_in_a_new_process(
    processes: _Processes,
) -> None:
    job = processes.client.get_job("approval")
    assert job is not None
    run = job.trigger({})
    first = processes.start_worker()
    wait_for(processes.status_is(run.id, RunStatus.WAITING), "the run waiting", WAIT)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0

    (wait,) = processes.client.get_waits(run.id)
    assert processes.client.signal(wait.id, {"approved": "yes"}, signal_id="s1") == "accepted"
    assert processes.status_is(run.id, RunStatus.WAITING)(), "no worker: it stays waiting"

    second = processes.start_worker()
    try:
        done = processes.client.wait_for_run(run.id, timeout=WAIT)
    except TimeoutError:
        raise AssertionError(processes.diagnostics()) from None
    assert done.output == {"payload": {"approved": "yes"}, "finished_by": second.pid}
    assert processes.effects(run.id) == [("before", first.pid), ("after", second.pid)]
    assert done.lease_generation == 2, "claimed once before the wait, once after"
