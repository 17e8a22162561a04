"""A job app for crash tests, run in real worker processes via ``durably worker``.

Configured from the environment so each test points it at its own files:
``CRASH_DB_URL`` (the database) and ``CRASH_SIDE_EFFECTS`` (a file every step
execution appends a line to: run id, step, pid). A step named in
``CRASH_SLOW_STEP`` sleeps long enough for the test to kill the worker inside it,
the first time only (marker files in ``CRASH_DIR``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from durably import Durably, StepContext

durably = Durably(
    os.environ["CRASH_DB_URL"],
    polling_interval=0.05,
    heartbeat_interval=0.2,
    stale_threshold=1.0,
    max_concurrent_runs=int(os.environ.get("CRASH_SLOTS", "1")),
)

SIDE_EFFECTS = Path(os.environ["CRASH_SIDE_EFFECTS"])
CRASH_DIR = Path(os.environ.get("CRASH_DIR", SIDE_EFFECTS.parent))
SLOW_STEP = os.environ.get("CRASH_SLOW_STEP", "")


def _effect(step: StepContext, name: str) -> str:
    with SIDE_EFFECTS.open("a") as f:
        f.write(f"{step.run_id} {name} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    if name == SLOW_STEP:
        marker = CRASH_DIR / f"{step.run_id}.{name}.entered"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
    return f"{name}-done"


@durably.job("four-steps")
def four_steps(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
    results = [
        step.run(name, lambda name=name: _effect(step, name)) for name in ("s1", "s2", "s3", "s4")
    ]
    return {"n": input["n"], "results": results}
