"""Idle maintenance: what a worker does when it has nothing to run, at most once a minute.

The reaper (expired leases back to pending, so status tells the truth),
deleting the rows of long-dead workers, the retention purge
(``retain_runs``), pruning the claim times of rate-limited queues, and a ``TRUNCATE`` checkpoint that keeps the WAL file
from growing without end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..clock import now_ms
from ..config import MAINTENANCE_INTERVAL, Settings
from ..core import operation
from ..core.maintenance import maintenance_op
from ..flow import DeclaredQueues
from ..storage import AnyDatabase


class Maintenance:
    """Runs the maintenance pass when it is due (or forced); safe from any thread."""

    def __init__(
        self,
        db: AnyDatabase,
        settings: Settings,
        queues: DeclaredQueues,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self._settings = settings
        self._queues = queues
        self.clock = clock
        self._last = 0.0
        self._wal_mode: bool | None = None

    def due(self) -> bool:
        return time.monotonic() - self._last >= MAINTENANCE_INTERVAL

    def run(self, *, force: bool = False) -> None:
        if not force and not self.due():
            return
        self._last = time.monotonic()
        window = self._queues.longest_window_ms()
        operation.run(maintenance_op(self.clock(), self._settings, window), self._db)
        if self._wal_mode is None:
            self._wal_mode = self._db.journal_mode() == "wal"
        if self._wal_mode:
            self._db.checkpoint_wal()
