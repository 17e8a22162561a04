"""The thread worker engine, for WSGI apps and plain scripts.

One loop thread claims runs while a slot is free and hands each to one of
``max_concurrent_runs`` slot threads. A slot that finishes a run
wakes the loop at once; a trigger in this process wakes it too; otherwise it
polls every ``polling_interval``. Database errors in the loop are reported
as ``worker:error`` and retried with jittered exponential backoff.

The slot threads are daemon threads, unlike a ``ThreadPoolExecutor``'s: the
interpreter joins executor threads at exit *before* it calls ``atexit``
handlers, so an ``atexit.register(durably.stop, timeout=...)`` (how a WSGI
app stops its engine) would only run after every in-flight run had ended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ..execution import execute
from ..leases import ClaimedRun
from ..runtime import Runtime
from .base import WorkerBase, error_backoff


def _nothing() -> None:
    pass


class ThreadWorker(WorkerBase):
    engine = "thread"

    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        super().__init__(runtime, worker_id)
        self._queue: queue.SimpleQueue[ClaimedRun | None] = queue.SimpleQueue()
        self._slot_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_waker: Callable[[], None] = _nothing

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        runtime = self.runtime
        runtime.service.register_worker(self.identity)
        runtime.heartbeat.worker_ids.add(self.id)
        runtime.heartbeat.ensure_running()
        self._remove_waker = runtime.add_waker(self._wake.set)
        for number in range(self.slots):
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
        them at once from their completed steps.
        """
        self._stopping.set()
        self._wake.set()
        self._remove_waker()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if not self._wait_idle(timeout):
            self._give_up_runs()
        for _slot in self._slot_threads:
            self._queue.put(None)
        for slot in self._slot_threads:
            if slot is not threading.current_thread():
                slot.join()
        self.runtime.heartbeat.worker_ids.discard(self.id)
        try:
            self.runtime.service.deregister_worker(self.id)
        except Exception as exc:
            self._report(exc, "worker-deregister")

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
        settings = self.runtime.settings
        service = self.runtime.service
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            if self._active >= self.slots:
                self._wake.wait()
                continue
            try:
                claimed = service.claim(self.id)
            except Exception as exc:
                failures += 1
                self._report(exc, "claim")
                self._wake.wait(error_backoff(failures, settings.polling_interval))
                continue
            failures = 0
            if claimed is not None:
                with self._lock:
                    self._active += 1
                self._queue.put(claimed)
                continue
            if self._active == 0:
                try:
                    service.run_maintenance()
                except Exception as exc:
                    self._report(exc, "idle-maintenance")
            self._wake.wait(settings.polling_interval)

    def _slot(self) -> None:
        while (claimed := self._queue.get()) is not None:
            self._run(claimed)

    def _run(self, claimed: ClaimedRun) -> None:
        try:
            execute(self.runtime, claimed)
        except Exception as exc:
            self._report(exc, "run-execution", claimed.lease.run_id)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
            self._wake.set()
