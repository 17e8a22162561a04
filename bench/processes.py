"""W4 (recovery after ``kill -9``) and W5 (worker processes, history, memory).

Every worker here is a real process (:mod:`bench.worker`); the bench process
only triggers runs and watches the database: a file with the stdlib
``sqlite3`` module, which reads libSQL files as well, a PostgreSQL database
with plain psycopg.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import history, postgres
from .apps import JOB, AppConfig, Target, build, inputs
from .workloads import Throughput

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.01
"""Seconds between looks at the database while timing."""


class WorkerProcess:
    """One ``python -m bench.worker`` process (see its docstring for the protocol)."""

    def __init__(self, config: AppConfig) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", json.dumps(config.to_json())],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker process did not start: {self._error_tail()}")

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        """Stop the worker (in-flight runs finish) and return its report."""
        out, _ = self.process.communicate("stop\n", timeout=timeout)
        if self.process.returncode != 0:
            raise RuntimeError(f"worker process failed: {self._error_tail()}")
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._stderr.close()

    def _error_tail(self) -> str:
        self.process.wait(10)
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]


class Observer:
    """Counts runs by status, straight from the database, without touching durably."""

    def __init__(self, target: Target) -> None:
        if target.server_url is not None:
            self._conn = postgres.connect(target.server_url)
            self._param = "%s"
        else:
            self._conn = sqlite3.connect(target.path, isolation_level=None)
            self._param = "?"

    def count(self, status: str) -> int:
        sql = "SELECT count(*) FROM durably_runs WHERE status = {0} AND job_name = {0}"
        row = self._conn.execute(sql.format(self._param), (status, JOB)).fetchone()
        return int(row[0])

    def active(self) -> bool:
        sql = "SELECT 1 FROM durably_runs WHERE status IN ('pending', 'leased') LIMIT 1"
        return self._conn.execute(sql).fetchone() is not None

    def step_rows(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM durably_steps").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        time.sleep(POLL)
    return True


def _prepare(target: Target, runs: int) -> None:
    """Migrate the file and queue ``runs`` pending runs of the bench job.

    The rows go straight into the table (what ``batch_trigger`` writes):
    triggering is W1's subject, and through durably it would take longer
    than the timed part for the memory workload's 20k runs. On PostgreSQL,
    ``batch_trigger`` writes them: it is fast there, and nothing else
    writes a server's tables from outside.
    """
    with build(AppConfig(target.url)) as client:
        client.migrate()
        if target.server_url is not None:
            job = client.get_job(JOB)
            assert job is not None
            job.batch_trigger(inputs(runs))
            return
    history.insert_pending(target.path, runs)


@dataclass(frozen=True)
class Drained:
    """What the workers of one timed drain did."""

    throughput: Throughput
    reports: list[dict[str, Any]]


def drain(target: Target, processes: int, runs: int, cap: float) -> Drained:
    """Queue ``runs``, then time ``processes`` 4-slot workers from ``go`` until none is active."""
    _prepare(target, runs)
    workers = [WorkerProcess(AppConfig(target.url)) for _ in range(processes)]
    observer = Observer(target)
    try:
        for worker in workers:
            worker.wait_ready()
        started = time.perf_counter()
        for worker in workers:
            worker.send("go")
        _wait_until(lambda: not observer.active(), cap)
        elapsed = time.perf_counter() - started
        completed = observer.count("completed")
        reports = [worker.finish() for worker in workers]
        return Drained(Throughput(completed, elapsed, runs), reports)
    finally:
        observer.close()
        for worker in workers:
            worker.close()


def scale(target: Target, processes: int, runs: int, cap: float) -> Throughput:
    """W5: W2's runs drained by ``processes`` worker processes on one file."""
    return drain(target, processes, runs, cap).throughput


@dataclass(frozen=True)
class Memory:
    """Resident memory of one worker process over a long drain."""

    runs: int
    peak_mb: float
    early_mb: float
    """RSS once a quarter of the runs had completed (imports, pools and caches warm)."""
    final_mb: float

    @property
    def growth(self) -> float:
        """Fractional RSS growth from the first quarter to the end."""
        return self.final_mb / self.early_mb - 1


def memory(target: Target, runs: int, cap: float) -> Memory:
    """W5 memory: one worker process over ``runs`` runs; RSS sampled in that process."""
    drained = drain(target, 1, runs, cap)
    report = drained.reports[0]
    samples = [(int(count), int(kb)) for count, kb in report["samples"]]
    done = report["completed"]
    early = next((kb for count, kb in samples if count >= done / 4), samples[-1][1])
    return Memory(
        runs=done,
        peak_mb=report["peak_kb"] / 1024,
        early_mb=early / 1024,
        final_mb=samples[-1][1] / 1024,
    )


@dataclass(frozen=True)
class RecoveryConfig:
    runs: int = 20
    stale_threshold: float = 2.0
    heartbeat_interval: float = 0.5
    polling_interval: float = 1.0
    """durably's default: how often an idle worker looks for claimable runs."""

    @property
    def expected(self) -> float:
        """Upper bound: a full lease plus a full polling interval."""
        return self.stale_threshold + self.polling_interval


def recovery(target: Target, config: RecoveryConfig, timeout: float = 60) -> float:
    """W4: seconds from ``kill -9`` of a worker holding ``runs`` runs until all completed.

    The victim has completed each run's first step and sleeps in the second
    when it is killed; a second worker process, already running and idle,
    takes the runs over once their leases expire and replays step one.
    """
    _prepare(target, config.runs)
    settings = AppConfig(
        target.url,
        max_concurrent_runs=config.runs,
        stale_threshold=config.stale_threshold,
        heartbeat_interval=config.heartbeat_interval,
        polling_interval=config.polling_interval,
    )
    victim = WorkerProcess(
        AppConfig(**{**settings.to_json(), "sleep_step": "b", "sleep_seconds": 600})
    )
    rescuer = WorkerProcess(settings)
    observer = Observer(target)
    try:
        victim.wait_ready()
        rescuer.wait_ready()
        victim.send("go")
        if not _wait_until(lambda: observer.step_rows() >= config.runs, timeout):
            raise RuntimeError("the victim never held every run past its first step")
        rescuer.send("go")
        victim.kill()
        killed = time.perf_counter()
        if not _wait_until(lambda: observer.count("completed") == config.runs, timeout):
            raise RuntimeError(f"runs not recovered within {timeout}s")
        elapsed = time.perf_counter() - killed
        rescuer.finish()
        return elapsed
    finally:
        observer.close()
        victim.close()
        rescuer.close()
