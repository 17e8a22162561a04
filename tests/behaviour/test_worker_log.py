"""What ``durably worker`` logs: a failed run is one ERROR record with its traceback.

The worker runs as the real executable, with ``--migrate`` (so Alembic runs
too and must stay quiet), on a SQLite file; the test triggers runs through
the Python API and reads the worker's output once it has stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from durably import Durably, SchemaError

DURABLY = Path(sys.executable).with_name("durably")

APP = """
from durably import Durably, Retry

durably = Durably("sqlite:///app.db", polling_interval=0.05)


def disk_full():
    raise OSError("disk full")


@durably.job("export")
def export(step, input):
    step.run("write", disk_full)


@durably.job("flaky", retry=Retry(max_attempts=2, initial_delay=0.05))
def flaky(step, input):
    raise TimeoutError("slow service")


@durably.job("fine")
def fine(step, input):
    return step.run("ok", lambda: 1)
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("worker_engine", ["thread", "asyncio"])
def test_a_failed_run_is_one_error_record_with_its_traceback(
    tmp_path: Path, worker_engine: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "TURSO_"))}
    worker = subprocess.Popen(
        [str(DURABLY), "worker", "app:durably", "--migrate", "--engine", worker_engine],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        durably = Durably(f"sqlite:///{tmp_path / 'app.db'}")
        wait_for(lambda: _registered(durably), "the worker to migrate and register")
        # The same job names as the worker's app: this process only triggers them.
        ids = [
            durably.job(name)(_never_called).trigger({}).id for name in ("export", "flaky", "fine")
        ]
        wait_for(
            lambda: all(durably.get_run(i).is_terminal for i in ids),  # type: ignore[union-attr]
            "every run to end",
        )
        durably.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    lines = (out + err).splitlines()

    errors = [line for line in lines if " ERROR durably " in line]
    assert len(errors) == 2, err  # export, and flaky once its retry was used up
    export_error = next(line for line in errors if f"run {ids[0]} (job export)" in line)
    assert "failed in step 'write': OSError: disk full" in export_error
    traceback_at = lines.index(export_error) + 1
    assert lines[traceback_at] == "Traceback (most recent call last):"
    assert 'raise OSError("disk full")' in "\n".join(lines[traceback_at:])

    retries = [line for line in lines if " WARNING durably " in line and "attempt 1 failed" in line]
    assert len(retries) == 1, err
    assert f"run {ids[1]} (job flaky) attempt 1 failed: TimeoutError: slow service" in retries[0]
    assert any(" INFO durably worker " in line and "started" in line for line in lines), err
    assert any(" INFO durably worker " in line and "stopped" in line for line in lines), err
    assert "alembic" not in err  # Alembic's INFO lines about its context stay out
    assert ids[2] not in out + err  # a completed run is logged at DEBUG only


def _registered(durably: Durably) -> bool:
    try:
        return durably.get_workers() != []
    except SchemaError:  # not migrated yet
        return False


def _never_called(step: object, input: object) -> None:
    raise AssertionError("the worker process runs the jobs, not the test")
