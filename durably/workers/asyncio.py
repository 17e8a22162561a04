"""The asyncio worker engine, for ASGI apps (FastAPI, Starlette) and async scripts.

One task claims runs while a slot is free and starts a task for each, all in
the running event loop; a busy slot's task claims its next run as it records
the end of the last one, and runs that too. It uses the same
:class:`~durably.leases.LeaseService` operations as the thread engine, run
from the loop (:func:`durably.operation.run_async`): their writes go to the
runtime's database threads together (:mod:`durably.loop_commit`), so nothing
that touches the database (or sleeps on a lock) runs on the loop.
``async def`` jobs are awaited on the loop; ``def`` jobs run whole in a
thread of the engine's pool of ``max_concurrent_runs`` threads. Lease renewal
is the process's heartbeat thread, shared with the thread engine: a busy
loop cannot delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .. import operation
from ..bridge import Threads, threadsafe_setter, wait_event
from ..execution import execute_async
from ..leases import ClaimedRun
from ..operation import Operation
from ..runtime import Runtime
from .base import WorkerBase, error_backoff


def _nothing() -> None:
    pass


class AsyncioWorker(WorkerBase):
    engine = "asyncio"

    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        super().__init__(runtime, worker_id)
        self._step_threads = Threads(self.slots, "durably-step")
        self._runs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._remove_waker: Callable[[], None] = _nothing

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        runtime = self.runtime
        await runtime.call(runtime.service.register_worker, self.identity)
        runtime.heartbeat.worker_ids.add(self.id)
        runtime.heartbeat.ensure_running()
        self._remove_waker = runtime.add_waker(threadsafe_setter(self._wake))
        self._task = asyncio.create_task(self._claim_loop(), name=f"durably-worker-{self.id}")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait for in-flight runs (at most ``timeout`` seconds).

        Runs still going after ``timeout`` are asked to stop at their next
        step boundary; their leases are released so another worker resumes
        them at once from their completed steps.
        """
        self._stopping = True
        self._wake.set()
        self._remove_waker()
        if self._task is not None:
            await self._task
        if not await wait_event(self._idle, timeout):
            self._give_up_runs()
            await self._idle.wait()
        self._step_threads.shutdown(wait=False)
        self.runtime.heartbeat.worker_ids.discard(self.id)
        try:
            await self.runtime.call(self.runtime.service.deregister_worker, self.id)
        except Exception as exc:
            self._report(exc, "worker-deregister")

    # -- the loop ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        runtime = self.runtime
        settings = runtime.settings
        service = runtime.service
        failures = 0
        while not self._stopping:
            self._wake.clear()
            if len(self._runs) >= self.slots:
                await self._wake.wait()
                continue
            try:
                claimed = await operation.run_async(service.claim_op(self.id), runtime)
            except Exception as exc:
                failures += 1
                self._report(exc, "claim")
                await self._sleep(error_backoff(failures, settings.polling_interval))
                continue
            failures = 0
            if claimed is not None:
                self._start_run(claimed)
                continue
            if not self._runs:
                try:
                    await runtime.call(service.run_maintenance)
                except Exception as exc:
                    self._report(exc, "idle-maintenance")
            await self._sleep(settings.polling_interval)

    async def _sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` or until woken (a free slot, a local trigger, stop)."""
        await wait_event(self._wake, seconds)

    def _start_run(self, claimed: ClaimedRun) -> None:
        task = asyncio.create_task(self._run(claimed), name=f"durably-run-{claimed.lease.run_id}")
        self._runs.add(task)
        self._idle.clear()

    async def _run(self, claimed: ClaimedRun) -> None:
        """Execute a run, then the runs claimed as each one ended, in this one task (slot).

        The next run is claimed right after the end of the previous one is
        recorded (``claim_next``), by this task: a busy worker does not wake
        the claim loop for it (measured: 5-30% more runs per second; see
        docs/performance.md).
        When nothing is claimable or the claim fails, the claim loop takes
        over again: it polls, backs off and reports errors. A run claimed
        just as this task is cancelled (its loop shutting down) is left to its
        lease, as after a crash.
        """
        follow_ups: list[ClaimedRun] = []

        def claim_next() -> Operation[None]:
            if self._stopping:
                return
            with contextlib.suppress(Exception):
                found = yield from self.runtime.service.claim_op(self.id)
                if found is not None:
                    follow_ups.append(found)

        current: ClaimedRun | None = claimed
        try:
            while current is not None:
                try:
                    await execute_async(
                        self.runtime, current, step_threads=self._step_threads, then=claim_next
                    )
                except (Exception, SystemExit) as exc:
                    # A job's SystemExit ends that run (its lease was handed back),
                    # not the application's event loop: the thread engine's
                    # behaviour, where it ends only the worker thread's task.
                    self._report(exc, "run-execution", current.lease.run_id)
                current = follow_ups.pop() if follow_ups else None
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._runs.discard(task)
            if not self._runs:
                self._idle.set()
            self._wake.set()
