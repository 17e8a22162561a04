"""The thread worker engine, for WSGI apps and plain scripts.

One loop thread claims runs while a slot is free and hands each to one of
``max_concurrent_runs`` slot threads; the policy is
:class:`~durably.engines.claim_loop.ClaimPolicy`'s. A slot that finishes a
run claims its next in the same write and runs it; a slot that finds none
wakes the loop. A trigger in this process wakes the loop too; otherwise it
polls every ``polling_interval``.

The slot threads are daemon threads, unlike a ``ThreadPoolExecutor``'s: the
interpreter joins executor threads at exit *before* it calls ``atexit``
handlers, so an ``atexit.register(durably.stop, timeout=...)`` (how a WSGI
app stops its engine) would only run after every in-flight run had ended.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable

from ..core import operation
from ..core.leases import ClaimedRun, WorkerIdentity
from .claim_loop import GIVE_UP_GRACE, ClaimPolicy
from .run import execute
from .runtime import Runtime


def _nothing() -> None:
    pass


class ThreadWorker:
    engine = "thread"

    def __init__(
        self, runtime: Runtime, worker_id: str, queues: frozenset[str] | None = None
    ) -> None:
        self.runtime = runtime
        identity = WorkerIdentity(id=worker_id, engine=self.engine)
        self.policy = ClaimPolicy(runtime, identity, queues)
        self._queue: queue.SimpleQueue[ClaimedRun | None] = queue.SimpleQueue()
        self._slot_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_waker: Callable[[], None] = _nothing

    @property
    def id(self) -> str:
        return self.policy.worker_id

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        operation.run(self.policy.register_op(), self.runtime.db)
        self.policy.registered(True)
        self._remove_waker = self.runtime.add_waker(self._wake.set)
        for number in range(self.policy.slots):
            slot = threading.Thread(target=self._slot, name=f"durably-run-{number}", daemon=True)
            slot.start()
            self._slot_threads.append(slot)
        self._thread = threading.Thread(
            target=self._loop, name=f"durably-worker-{self.id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait for in-flight runs (at most ``timeout`` seconds).

        Runs still going after ``timeout`` are asked to stop at their next
        step boundary; their leases are released so another worker resumes
        them at once from their completed steps. A run inside a step that
        goes on is handed back all the same, and its slot thread (a daemon)
        left to finish the step: this returns about ``timeout`` seconds in.
        """
        self.policy.stopping = True
        self._wake.set()
        self._remove_waker()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        idle = self._wait_idle(timeout)
        if not idle:
            self.policy.give_up_runs()
            idle = self._wait_idle(GIVE_UP_GRACE)
            if not idle:
                operation.run(self.policy.hand_back_op(), self.runtime.db)
        for _slot in self._slot_threads:
            self._queue.put(None)
        for slot in self._slot_threads:
            if idle and slot is not threading.current_thread():
                slot.join()
        self.policy.registered(False)
        try:
            operation.run(self.policy.deregister_op(), self.runtime.db)
        except Exception as exc:
            self.policy.report(exc, "worker-deregister")

    def _wait_idle(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._active:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        policy = self.policy
        while not policy.stopping:
            self._wake.clear()
            if not policy.has_free_slot(self._active):
                self._wake.wait()
                continue
            try:
                claimed = operation.run(policy.claim_op(), self.runtime.db)
            except Exception as exc:
                self._wake.wait(policy.claim_failed(exc))
                continue
            policy.claimed()
            if claimed is not None:
                with self._lock:
                    self._active += 1
                self._queue.put(claimed)
                continue
            if policy.should_maintain(self._active):
                policy.maintain()
            self._wake.wait(policy.idle_wait())

    def _slot(self) -> None:
        while (claimed := self._queue.get()) is not None:
            self._run(claimed)

    def _run(self, claimed: ClaimedRun) -> None:
        """Execute a run, then each run claimed as the last one ended, in this slot."""
        current: ClaimedRun | None = claimed
        try:
            while current is not None:
                follow_ups: list[ClaimedRun] = []
                try:
                    execute(
                        self.runtime,
                        current,
                        then=functools.partial(self.policy.claim_next_op, follow_ups),
                    )
                except Exception as exc:
                    self.policy.report(exc, "run-execution", current.lease.run_id)
                current = follow_ups.pop() if follow_ups else None
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
            self._wake.set()
