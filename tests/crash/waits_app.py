"""The job app of the crash suite's wait tests (tests/crash/test_waits.py), run in real
worker processes: ``python -m durably worker tests.crash.waits_app:durably``.

``CRASH_DB_URL`` is the database; ``CRASH_LOG`` a file every step execution
appends one line to (run id, step, pid), with one ``write()`` on an
``O_APPEND`` file that survives ``kill -9``.
"""

from __future__ import annotations

import os
from typing import Any

from durably import Durably, StepContext

durably = Durably(
    os.environ["CRASH_DB_URL"],
    polling_interval=0.05,
    heartbeat_interval=0.2,
    stale_threshold=1.0,
)


def _effect(step: StepContext, name: str) -> int:
    line = f"{step.run_id} {name} {os.getpid()}\n".encode()
    fd = os.open(os.environ["CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return os.getpid()


@durably.job("sleeper")
def sleeper(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
    step.run("before", lambda: _effect(step, "before"))
    step.sleep("nap", input["seconds"])
    after = step.run("after", lambda: _effect(step, "after"))
    return {"finished_by": after}


@durably.job("approval")
def approval(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
    step.run("before", lambda: _effect(step, "before"))
    result = step.wait_for(step.prepare_wait("approved"))
    after = step.run("after", lambda: _effect(step, "after"))
    return {"payload": result.payload, "finished_by": after}
