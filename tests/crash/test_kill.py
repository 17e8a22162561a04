"""kill -9 a real worker process mid-step; another worker process finishes the run.

Proves the core promise: no run lost, no completed step re-run, the
interrupted step re-run (steps are at-least-once), the run completed once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from durably import Durably

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "tests.crash.app:durably"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_kill_9_mid_step_resumes_without_rerunning_completed_steps(
    db_url: str, tmp_path: Path
) -> None:
    side_effects = tmp_path / "effects.log"
    side_effects.touch()
    env = {
        **os.environ,
        "CRASH_DB_URL": db_url,
        "CRASH_SIDE_EFFECTS": str(side_effects),
        "CRASH_SLOW_STEP": "s2",
        "PYTHONPATH": str(ROOT),
    }
    client = Durably(db_url)
    client.migrate()
    # The client only triggers and reads (it runs no worker); the job's code
    # runs in the worker processes, which import tests/crash/app.py.
    job = client.job("four-steps")(lambda step, input: None)
    run = job.trigger({"n": 1})

    first = _worker(env)
    try:
        marker = tmp_path / f"{run.id}.s2.entered"
        _wait_for(marker.exists, 20)
        # Killed once a heartbeat has recorded s2 as running (a step that dies
        # sooner leaves no attempt: its row is written with its outcome).
        _wait_for(
            lambda: [a.step_name for a in client.get_step_attempts(run.id)][-1:] == ["s2"], 20
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert client.get_run(run.id).status == "leased"  # type: ignore[union-attr]

        second = _worker(env)
        try:
            try:
                done = client.wait_for_run(run.id, timeout=30)
            except TimeoutError:
                second.kill()
                _out, err = second.communicate()
                raise AssertionError(f"{client.get_run(run.id)}\n{err.decode()[-3000:]}") from None
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        # The attempt the killed worker left behind reads interrupted; s2's rerun completed.
        attempts = [
            (a.step_name, a.status.value, a.run_attempt, a.lease_generation)
            for a in client.get_step_attempts(run.id)
        ]
    finally:
        if first.poll() is None:
            first.kill()
        client.close()

    assert done.output == {"n": 1, "results": ["s1-done", "s2-done", "s3-done", "s4-done"]}
    lines = [line.split() for line in side_effects.read_text().splitlines()]
    executions = Counter(step for _run, step, _pid in lines)
    assert executions == {"s1": 1, "s2": 2, "s3": 1, "s4": 1}
    pids = {step: {pid for _r, s, pid in lines if s == step} for step in executions}
    assert pids["s1"] == {str(first.pid)}
    assert len(pids["s2"]) == 2  # started by the killed worker, finished by the second
    assert pids["s4"] == {str(second.pid)}
    assert attempts == [
        ("s1", "completed", 1, 1),
        ("s2", "interrupted", 1, 1),
        ("s2", "completed", 1, 2),
        ("s3", "completed", 1, 2),
        ("s4", "completed", 1, 2),
    ]
