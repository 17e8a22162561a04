"""The asyncio worker engine, for ASGI apps (FastAPI, Starlette) and async scripts.

One task claims runs while a slot is free and starts a task for each, all in
the running event loop; the policy is
:class:`~durably.engines.claim_loop.ClaimPolicy`'s, as for the thread engine.
A slot's task claims its next run as it records the end of the last one, and
runs that too. Every database write goes through the async driver
(:func:`durably.core.operation.run_async`), so nothing that touches the
database (or sleeps on a lock) runs on the loop. ``async def`` jobs are
awaited on the loop; ``def`` jobs run whole in a thread of the engine's pool
of ``max_concurrent_runs`` threads. Lease renewal is the process's heartbeat
thread, shared with the thread engine: a busy loop cannot delay it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from ..bridge import Threads, threadsafe_setter, wait_event
from ..core import operation
from ..core.leases import ClaimedRun, WorkerIdentity
from .claim_loop import GIVE_UP_GRACE, UNWIND_GRACE, ClaimPolicy
from .run import execute_async
from .runtime import Runtime


def _nothing() -> None:
    pass


class AsyncioWorker:
    engine = "asyncio"

    def __init__(
        self, runtime: Runtime, worker_id: str, queues: frozenset[str] | None = None
    ) -> None:
        self.runtime = runtime
        identity = WorkerIdentity(id=worker_id, engine=self.engine)
        self.policy = ClaimPolicy(runtime, identity, queues)
        self._step_threads = Threads(self.policy.slots, "durably-step")
        self._runs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._remove_waker: Callable[[], None] = _nothing

    @property
    def id(self) -> str:
        return self.policy.worker_id

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await operation.run_async(self.policy.register_op(), self.runtime.async_db)
        self.policy.registered(True)
        self._remove_waker = self.runtime.add_waker(threadsafe_setter(self._wake))
        self._task = asyncio.create_task(self._claim_loop(), name=f"durably-worker-{self.id}")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait for in-flight runs (at most ``timeout`` seconds).

        Runs still going after ``timeout`` are asked to stop at their next
        step boundary (an awaiting ``async def`` step is cancelled); their
        leases are released so another worker resumes them at once from
        their completed steps. A run inside a ``def`` step that goes on is
        handed back all the same and its task cancelled (the step's thread
        finishes the step): this returns about ``timeout`` seconds in.
        """
        self.policy.stopping = True
        self._wake.set()
        self._remove_waker()
        if self._task is not None:
            await self._task
        if not await wait_event(self._idle, timeout):
            self.policy.give_up_runs()
            if not await wait_event(self._idle, GIVE_UP_GRACE):
                await operation.run_async(self.policy.hand_back_op(), self.runtime.async_db)
                for task in self._runs:
                    task.cancel()
                await wait_event(self._idle, UNWIND_GRACE)
        self._step_threads.shutdown(wait=False)
        self.policy.registered(False)
        try:
            await operation.run_async(self.policy.deregister_op(), self.runtime.async_db)
        except Exception as exc:
            self.policy.report(exc, "worker-deregister")

    # -- the loop ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        policy = self.policy
        while not policy.stopping:
            self._wake.clear()
            if not policy.has_free_slot(len(self._runs)):
                await self._wake.wait()
                continue
            try:
                claimed = await operation.run_async(policy.claim_op(), self.runtime.async_db)
            except Exception as exc:
                await wait_event(self._wake, policy.claim_failed(exc))
                continue
            policy.claimed()
            if claimed is not None:
                self._start_run(claimed)
                continue
            if policy.should_maintain(len(self._runs)):
                await self.runtime.call(policy.maintain)
            await wait_event(self._wake, policy.idle_wait())

    def _start_run(self, claimed: ClaimedRun) -> None:
        task = asyncio.create_task(self._run(claimed), name=f"durably-run-{claimed.lease.run_id}")
        self._runs.add(task)
        self._idle.clear()

    async def _run(self, claimed: ClaimedRun) -> None:
        """Execute a run, then each run claimed as the last one ended, in this one task (slot).

        A run claimed just as this task is cancelled (its loop shutting
        down) is left to its lease, as after a crash.
        """
        current: ClaimedRun | None = claimed
        try:
            while current is not None:
                follow_ups: list[ClaimedRun] = []
                try:
                    await execute_async(
                        self.runtime,
                        current,
                        step_threads=self._step_threads,
                        then=functools.partial(self.policy.claim_next_op, follow_ups),
                    )
                except (Exception, SystemExit) as exc:
                    # A job's SystemExit ends that run (its lease was handed back),
                    # not the application's event loop: the thread engine's
                    # behaviour, where it ends only the worker thread's task.
                    self.policy.report(exc, "run-execution", current.lease.run_id)
                current = follow_ups.pop() if follow_ups else None
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._runs.discard(task)
            if not self._runs:
                self._idle.set()
            self._wake.set()
