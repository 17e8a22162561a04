"""A run begun by one engine and finished by the other, across real processes.

A worker process on one engine is killed (``kill -9``) inside step 2 of a
run; a worker process on the other engine reclaims the run once its lease
is stale and finishes it. Step 1 is replayed from storage, not re-run; step
2 runs again (steps are at-least-once); step 3 runs once. The job is a
``def`` function in one process and an ``async def`` one in the other: the
stored steps, not the kind of function, are what carries over.
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

from durably import Durably, StepContext

pytestmark = pytest.mark.slow

APP = """
import asyncio, os, time
from pathlib import Path
from durably import Durably

durably = Durably(
    os.environ["X_DB_URL"], polling_interval=0.05, heartbeat_interval=0.2, stale_threshold=1.0
)
EFFECTS = Path(os.environ["X_EFFECTS"])
MARKERS = EFFECTS.parent
KIND = os.environ["X_KIND"]


def effect(run_id, name):
    with EFFECTS.open("a") as f:
        f.write(f"{run_id} {name} {KIND} {os.getpid()}\\n")
        f.flush()
        os.fsync(f.fileno())
    marker = MARKERS / f"{run_id}.{name}.entered"
    first_time = name == "s2" and not marker.exists()
    if first_time:
        marker.write_text(str(os.getpid()))
    return first_time


if KIND == "async":

    @durably.job("pipeline")
    async def pipeline(step, input):
        results = []
        for name in ("s1", "s2", "s3"):

            async def fn(name=name):
                if await asyncio.to_thread(effect, step.run_id, name):
                    await asyncio.sleep(60)  # killed in here
                return f"{name}-done"

            results.append(await step.run(name, fn))
        return results

else:

    @durably.job("pipeline")
    def pipeline(step, input):
        def fn(name):
            if effect(step.run_id, name):
                time.sleep(60)  # killed in here
            return f"{name}-done"

        return [step.run(name, lambda name=name: fn(name)) for name in ("s1", "s2", "s3")]
"""


def _worker(tmp_path: Path, db_url: str, engine: str, kind: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "X_DB_URL": db_url,
        "X_EFFECTS": str(tmp_path / "effects.log"),
        "X_KIND": kind,
        "PYTHONPATH": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "cross_app:durably", "--engine", engine],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("first", "second"),
    [(("thread", "def"), ("asyncio", "async")), (("asyncio", "async"), ("thread", "def"))],
    ids=["thread-then-asyncio", "asyncio-then-thread"],
)
def test_a_run_killed_on_one_engine_is_finished_by_the_other(
    db_url: str, tmp_path: Path, first: tuple[str, str], second: tuple[str, str]
) -> None:
    (tmp_path / "cross_app.py").write_text(APP)
    (tmp_path / "effects.log").touch()
    client = Durably(db_url)
    client.migrate()

    @client.job("pipeline")
    def pipeline(step: StepContext, input: None) -> None:  # the client only triggers
        raise AssertionError("the client runs no worker")

    run = pipeline.trigger(None)
    killed = _worker(tmp_path, db_url, *first)
    finisher: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(tmp_path / f"{run.id}.s2.entered", 30)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        finisher = _worker(tmp_path, db_url, *second)
        try:
            done = client.wait_for_run(run.id, timeout=30)
        except TimeoutError:
            finisher.kill()
            _out, err = finisher.communicate()
            raise AssertionError(f"{client.get_run(run.id)}\n{err.decode()[-3000:]}") from None
        finisher.send_signal(signal.SIGTERM)
        assert finisher.wait(20) == 0
    finally:
        for process in (killed, finisher):
            if process is not None and process.poll() is None:
                process.kill()
        client.close()

    assert done.output == ["s1-done", "s2-done", "s3-done"]
    lines = [line.split() for line in (tmp_path / "effects.log").read_text().splitlines()]
    executions = Counter(name for _run, name, _kind, _pid in lines)
    assert executions == {"s1": 1, "s2": 2, "s3": 1}
    by_step = {
        name: [(kind, pid) for _r, n, kind, pid in lines if n == name] for name in executions
    }
    assert by_step["s1"] == [(first[1], str(killed.pid))]
    assert by_step["s2"] == [(first[1], str(killed.pid)), (second[1], str(finisher.pid))]
    assert by_step["s3"] == [(second[1], str(finisher.pid))]
