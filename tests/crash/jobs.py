"""The job app of the crash suite, run in real worker processes.

    python -m durably worker tests.crash.jobs:durably

Configured from the environment, so that every test points it at its own files:

``CRASH_DB_URL``
    The database.
``CRASH_LOG``
    The side-effect log: every step execution, every step-result and completion
    write, and every ``worker:error`` is appended to it as one JSON line, with
    the pid and the lease (owner and generation, the fencing token) it ran
    under. Lines are appended with one ``write()`` on an ``O_APPEND`` file, so
    they survive ``kill -9`` (the kernel has them) and never interleave.
``CRASH_DIR``
    Where the marker files of ``CRASH_BLOCK`` go and where the test drops the
    ``release`` file (default: the log's directory).
``CRASH_BLOCK``
    ``s2`` (any step name): that step blocks until ``CRASH_DIR/release``
    exists; ``return``: the job blocks after its last step, before it returns.
    Only the first execution of each run blocks (a marker file per run).
``CRASH_STEP_SLEEP``
    ``"lo,hi"``: every step sleeps a random time in that range (seconds).
``CRASH_FLOW``
    When set, the queue ``limited`` allows 2 runs at once and ``metered`` 5 claims
    a second (flow control; the jobs' runs go there when triggered with ``queue=``).
``CRASH_SCHEDULE_EVERY``, ``CRASH_CATCH_UP``
    When set, the app declares the schedule ``tick``: a one-step ``steps`` run
    every that many seconds, with that catch-up policy (default ``latest``).
``CRASH_POLL``, ``CRASH_HEARTBEAT``, ``CRASH_STALE``, ``CRASH_LOCK_TIMEOUT``, ``CRASH_SLOTS``
    The worker settings (defaults: 0.05 s, 0.2 s, 1 s, 30 s, 1 slot).
``CRASH_CONNECTION_MAX_AGE``
    When set, every connection of the worker is closed this often (its
    ``Database`` is disposed, as at shutdown), so the worker opens the file
    anew all the time, as a long-running process eventually does. Faults that
    only affect *opening* the file (it became read-only, it was moved away)
    then reach the worker; without it they stay invisible to its open
    connections. Closing them all matters: SQLite hands a new connection the
    file descriptor of one closed while another connection of the process was
    still open, and that descriptor was opened for writing before the fault.

Every run's output names the process that finished it (``finished_by``) and
every step result the process that computed it, so a test can tell whose
work was kept.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from durably import AsyncStepContext, Durably, DurablyError, StepContext, testing

_env = os.environ

durably = Durably(
    _env["CRASH_DB_URL"],
    polling_interval=float(_env.get("CRASH_POLL", "0.05")),
    heartbeat_interval=float(_env.get("CRASH_HEARTBEAT", "0.2")),
    stale_threshold=float(_env.get("CRASH_STALE", "1.0")),
    lock_timeout=float(_env.get("CRASH_LOCK_TIMEOUT", "30")),
    max_concurrent_runs=int(_env.get("CRASH_SLOTS", "1")),
    preserve_steps=True,  # the tests read which lease wrote each step
    max_recoveries=int(_env.get("CRASH_MAX_RECOVERIES", "5")),
)

if _env.get("CRASH_FLOW"):
    durably.queue("limited", concurrency=2)
    durably.queue("metered", rate_limit=(5, 1.0))

LOG_PATH = Path(_env["CRASH_LOG"])
CRASH_DIR = Path(_env.get("CRASH_DIR", str(LOG_PATH.parent)))
BLOCK = _env.get("CRASH_BLOCK", "")
_lo, _, _hi = _env.get("CRASH_STEP_SLEEP", "0,0").partition(",")
STEP_SLEEP = (float(_lo), float(_hi or _lo))
BLOCK_LIMIT = 120.0
"""A blocked step gives up waiting for the release file after this long (a test that died)."""

_log_fd = os.open(LOG_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def record(event: str, **fields: Any) -> None:
    """Append one JSON line to the side-effect log (one atomic write)."""
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **fields})
    os.write(_log_fd, (line + "\n").encode())


def _lease(step: StepContext | AsyncStepContext) -> dict[str, Any]:
    # Private, but this is a test app: which claim of the run is executing this step.
    lease = step._execution.lease
    return {"run": lease.run_id, "owner": lease.owner, "gen": lease.generation}


def _block_once(step: StepContext, point: str) -> None:
    """Wait for CRASH_DIR/release, the first time this run reaches ``point`` only."""
    marker = CRASH_DIR / f"{step.run_id}.{point}.blocked"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    record("blocked", point=point, **_lease(step))
    release = CRASH_DIR / "release"
    abort_seen = False
    deadline = time.monotonic() + BLOCK_LIMIT
    while not release.exists() and time.monotonic() < deadline:
        if not abort_seen and step.cancelled:
            # The worker asked the run to stop (shutdown, lost lease); this step
            # carries on regardless, as a step that cannot be interrupted would.
            abort_seen = True
            record("abort-seen", point=point, **_lease(step))
        time.sleep(0.01)
    record("released", point=point, **_lease(step))


def _effect(step: StepContext, name: str) -> str:
    record("start", step=name, **_lease(step))
    lo, hi = STEP_SLEEP
    if hi > 0:
        time.sleep(random.uniform(lo, hi))
    if name == BLOCK:
        _block_once(step, name)
    record("end", step=name, **_lease(step))
    return f"{name}@{os.getpid()}"


def _names(input: dict[str, Any]) -> list[str]:
    return [f"s{i}" for i in range(1, int(input.get("steps", 3)) + 1)]


@durably.job("steps")
def steps(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
    results = [step.run(name, lambda name=name: _effect(step, name)) for name in _names(input)]
    if BLOCK == "return":
        _block_once(step, "return")
    return {"n": input["n"], "results": results, "finished_by": os.getpid()}


async def _effect_async(step: AsyncStepContext, name: str) -> str:
    record("start", step=name, **_lease(step))
    lo, hi = STEP_SLEEP
    if hi > 0:
        await asyncio.sleep(random.uniform(lo, hi))
    record("end", step=name, **_lease(step))
    return f"{name}@{os.getpid()}"


@durably.job("poison")
def poison(step: StepContext, input: dict[str, Any]) -> None:
    """A run whose step kills its worker process, as an out-of-memory kill or a segfault would."""

    def explode() -> None:
        record("start", step="explode", **_lease(step))
        os._exit(17)

    step.run("explode", explode)


@durably.job("async-steps")
async def async_steps(step: AsyncStepContext, input: dict[str, Any]) -> dict[str, Any]:
    """The same job as ``steps`` (without CRASH_BLOCK), as ``async def`` with async steps."""
    results = [
        await step.run(name, functools.partial(_effect_async, step, name)) for name in _names(input)
    ]
    return {"n": input["n"], "results": results, "finished_by": os.getpid()}


# -- audit of the fenced writes (wrapping the lease service: test instrumentation) --
#
# The step and completion writes are operations (durably.core.operation): the sync
# wrappers and the asyncio engine both run the ``*_op`` methods, so wrapping
# those audits every engine and every kind of job.

_service = testing.lease_service(durably)
_persist_step_op = _service.persist_step_op
_complete_op = _service.complete_op


def _audited(kind: str, write: Any, lease: Any, **fields: Any) -> Any:
    where = {"run": lease.run_id, "owner": lease.owner, "gen": lease.generation, **fields}
    record(f"{kind}-begin", **where)
    try:
        accepted = yield from write
    except Exception as exc:
        record(kind, ok=None, error=f"{type(exc).__name__}: {exc}", **where)
        raise
    record(kind, ok=bool(accepted), **where)
    return accepted


def _audited_persist_step(lease: Any, *args: Any, **kwargs: Any) -> Any:
    status = kwargs.get("status")
    return _audited(
        "persist",
        _persist_step_op(lease, *args, **kwargs),
        lease,
        step=kwargs.get("name"),
        status=getattr(status, "value", status),
    )


def _audited_complete(lease: Any, *args: Any, **kwargs: Any) -> Any:
    return _audited("complete", _complete_op(lease, *args, **kwargs), lease)


_service.persist_step_op = _audited_persist_step  # type: ignore[method-assign]
_service.complete_op = _audited_complete  # type: ignore[method-assign]


def _on_worker_error(event: Any) -> None:
    exception = event.exception
    record(
        "worker-error",
        context=event.context,
        run=event.run_id,
        error=event.error,
        type=None if exception is None else type(exception).__name__,
        durably_error=isinstance(exception, DurablyError),
    )


durably.on("worker:error", _on_worker_error)


# -- connection turnover (see CRASH_CONNECTION_MAX_AGE) ----------------------------

if _env.get("CRASH_CONNECTION_MAX_AGE"):
    _max_age = float(_env["CRASH_CONNECTION_MAX_AGE"])

    def _reopen_all() -> None:
        while True:
            time.sleep(_max_age)
            testing.database(durably).dispose()
            # A connection that was checked out during the dispose goes back
            # to the old pool and stays open until that pool is garbage: an
            # idle worker allocates too little for that to happen on its own.
            gc.collect()

    # A full collection of everything the app imported costs tens of
    # milliseconds: five a second would use a fifth of a CPU, which the fault
    # tests would take for the worker's own. Frozen, those objects are never
    # looked at again; the pool made by the dispose after the freeze is not
    # frozen, nor is any made later, so the collections still free them.
    gc.freeze()
    testing.database(durably).dispose()
    threading.Thread(target=_reopen_all, name="crash-connection-turnover", daemon=True).start()


# -- a schedule (test_schedules.py) ------------------------------------------------

if _env.get("CRASH_SCHEDULE_EVERY"):
    # Every worker process declares it, as every process of an app would.
    durably.schedule(
        "tick",
        steps,
        every=float(_env["CRASH_SCHEDULE_EVERY"]),
        input={"n": -1, "steps": 1},
        catch_up=_env.get("CRASH_CATCH_UP", "latest"),
    )
