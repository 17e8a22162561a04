"""What both worker engines share: identity, error reporting, backoff, giving runs back."""

from __future__ import annotations

import random

from ..events import EventType
from ..leases import AbortReason, WorkerIdentity
from ..runtime import Runtime

MAX_ERROR_BACKOFF = 30.0


def error_backoff(failures: int, base: float) -> float:
    """Seconds to wait after ``failures`` consecutive loop errors (jittered, capped)."""
    delay: float = min(MAX_ERROR_BACKOFF, base * 2.0 ** min(failures - 1, 16))
    return delay * (0.5 + random.random() / 2)


class WorkerBase:
    """The parts of a worker engine that do not depend on threads or an event loop."""

    engine: str

    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        self.runtime = runtime
        self.identity = WorkerIdentity(id=worker_id, engine=self.engine)
        self.slots = runtime.settings.max_concurrent_runs

    @property
    def id(self) -> str:
        return self.identity.id

    def _give_up_runs(self) -> None:
        """Ask this worker's runs to stop at their next step; their leases are then released."""
        for lease in self.runtime.leases.snapshot():
            if lease.owner == self.id:
                lease.abort(AbortReason.SHUTDOWN)

    def _report(self, exc: BaseException, context: str, run_id: str | None = None) -> None:
        self.runtime.events.emit(
            EventType.WORKER_ERROR, run_id=run_id, error=str(exc), exception=exc, context=context
        )
