"""What an embedded replica reports about itself: :class:`ReplicaMetrics` and its bookkeeping.

Everything here is measured in this process, by the replica's reader: its
syncs (when they succeeded, how many failed and why), the writes this
``Durably`` committed that the replica has not pulled yet, and how long its
reads took. Nothing asks the primary, so reading the metrics costs no round
trip and never waits for a sync in flight.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

FAILURE_WINDOW = 600.0
"""Seconds over which ``sync_failures`` counts (the guide alerts on 3 in 10 minutes)."""
LATENCY_SAMPLES = 1000
"""Reads whose latency the percentiles are taken over (the most recent ones)."""


@dataclass(frozen=True)
class ReplicaMetrics:
    """A replica's state, as :meth:`durably.Replica.metrics` returns it. Durations in seconds.

    ``sync_lag``: how long the oldest write this ``Durably`` committed on the
    primary has waited to reach the replica; 0 when the replica holds all of
    them. ``freshness``: seconds since the last successful sync (the replica
    holds everything committed before it began); None before the first one.
    ``sync_failures``: syncs that failed in the last 10 minutes;
    ``sync_failures_total`` since the replica opened, and ``last_sync_error``
    the most recent one's message (None once a sync has succeeded since).
    ``size_bytes``: the local file and its WAL. ``read_latency_p50`` and
    ``read_latency_p99``: of the last 1000 reads' queries on the local file
    (a sync a read waited for is not in them); None before any read.
    ``bytes_pulled``: received from the sync server since this process opened
    the replica, the first download included. ``syncs``: successful syncs.
    """

    sync_lag: float
    freshness: float | None
    sync_failures: int
    sync_failures_total: int
    last_sync_error: str | None
    size_bytes: int
    read_latency_p50: float | None
    read_latency_p99: float | None
    bytes_pulled: int
    syncs: int


class SyncRecord:
    """The reader's measurements, guarded by a lock of their own (never the replica's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synced_at: float | None = None
        self._unsynced_since: float | None = None
        self._failures: deque[float] = deque()
        self._failures_total = 0
        self._last_error: str | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._bytes_pulled = 0
        self._syncs = 0

    def saw_unsynced_writes(self, at: float) -> None:
        """The primary has writes of this ``Durably`` the replica lacks, since ``at`` or before."""
        with self._lock:
            if self._unsynced_since is None or at < self._unsynced_since:
                self._unsynced_since = at

    def synced(self, started: float, *, complete: bool, bytes_pulled: int) -> None:
        """A sync that began at ``started`` succeeded. ``complete``: no write of ours was
        committed since it began, so the replica now holds all of them; otherwise those
        writes are counted as waiting since ``started`` (they came no earlier)."""
        with self._lock:
            self._synced_at = started
            self._unsynced_since = None if complete else started
            self._last_error = None
            self._bytes_pulled = bytes_pulled
            self._syncs += 1

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._failures.append(time.monotonic())
            self._failures_total += 1
            self._last_error = str(error)

    def read_took(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)

    def snapshot(self, path: str | os.PathLike[str]) -> ReplicaMetrics:
        now = time.monotonic()
        with self._lock:
            while self._failures and self._failures[0] < now - FAILURE_WINDOW:
                self._failures.popleft()
            latencies = sorted(self._latencies)
            lag = 0.0 if self._unsynced_since is None else now - self._unsynced_since
            return ReplicaMetrics(
                sync_lag=lag,
                freshness=None if self._synced_at is None else now - self._synced_at,
                sync_failures=len(self._failures),
                sync_failures_total=self._failures_total,
                last_sync_error=self._last_error,
                size_bytes=_size(path),
                read_latency_p50=_percentile(latencies, 0.5),
                read_latency_p99=_percentile(latencies, 0.99),
                bytes_pulled=self._bytes_pulled,
                syncs=self._syncs,
            )


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of a sorted list; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


def _size(path: str | os.PathLike[str]) -> int:
    """Bytes of the replica file and its WAL (0 for a file not downloaded yet)."""
    total = 0
    for name in (os.fspath(path), os.fspath(path) + "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(name).st_size
    return total
