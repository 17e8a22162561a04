"""The heartbeat: one thread per process that renews every held lease.

All leases (and worker rows) are renewed in one write transaction per tick.
A failed renewal is reported as ``worker:error``; past the lease's local
deadline, the run confirms its lease itself before it starts another step. A thread of its own, shared by
both engines, so that a busy event loop cannot delay it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..core.lease_service import LeaseService
from ..core.leases import AbortReason, Lease
from ..events import EventBus, EventType


class Heartbeat:
    """Starts with the first lease or worker; :meth:`stop` joins the thread."""

    def __init__(
        self, service: LeaseService, leases: Callable[[], list[Lease]], events: EventBus
    ) -> None:
        self._service = service
        self._leases = leases
        """The leases this process holds now."""
        self._events = events
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_ids: set[str] = set()

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="durably-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        interval = self._service.settings.heartbeat_interval
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> None:
        """Renew every lease this process holds now; abort those it lost."""
        events = self._events
        leases = self._leases()
        worker_ids = sorted(self.worker_ids)
        if not leases and not worker_ids:
            return
        try:
            outcome = self._service.heartbeat(worker_ids, leases)
        except Exception as exc:
            events.emit(
                EventType.WORKER_ERROR, error=str(exc), exception=exc, context="lease-renewal"
            )
            return
        for lease in outcome.renewed:
            events.emit(
                EventType.RUN_LEASE_RENEWED,
                run_id=lease.run_id,
                job_name=lease.job_name,
                labels=lease.labels,
                lease_owner=lease.owner,
            )
        for lease, reason in outcome.lost:
            lease.abort(reason)
            # A lease fenced off by its own worker (a timed-out attempt) was
            # renewed from a snapshot taken just before: nothing was lost.
            if reason == AbortReason.LEASE_LOST and lease.abort_reason != AbortReason.TIMED_OUT:
                events.emit(
                    EventType.WORKER_ERROR,
                    run_id=lease.run_id,
                    job_name=lease.job_name,
                    error=f"Lease renewal lost ownership for run {lease.run_id}",
                    context="lease-renewal",
                )
