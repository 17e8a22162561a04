"""Prometheus metrics (``pip install 'durably[prometheus]'``): what a worker did, and the queue.

    from durably.contrib.prometheus import DurablyMetrics

    metrics = DurablyMetrics(durably)    # counts from now on, in this process
    metrics.exposition()                 # the text Prometheus scrapes

Counters and histograms come from the events of this process's workers
(``durably.on``), so each process reports its own and Prometheus sums them:

- ``durably_runs_started_total``, ``…_completed_total``, ``…_failed_total``,
  ``…_retried_total`` by ``job`` and ``queue``;
- ``durably_run_duration_seconds`` and ``durably_step_duration_seconds``
  by ``job`` (step names are not labels: they are often built from data,
  and every name would be a time series of its own);
- ``durably_lease_renewal_failures_total``, ``durably_worker_errors_total``
  by ``context``.

The queue's state is read from the database when scraped, so every process
reports the same numbers: ``durably_runs`` by ``status`` (``pending``,
``running``, ``stale``, ``waiting``) and ``durably_oldest_pending_age_seconds``
(from the replica when there is one; left out of a scrape for which it
cannot sync).

With an embedded replica (``Durably(..., replica=...)``), its
:meth:`~durably.Replica.metrics` are read at each scrape too:
``durably_replica_sync_lag_seconds``, ``durably_replica_freshness_seconds``
(absent before the first sync), ``durably_replica_sync_failures_total`` and
``durably_replica_recent_sync_failures`` (the last 10 minutes),
``durably_replica_syncs_total``, ``durably_replica_size_bytes``,
``durably_replica_pulled_bytes_total`` and
``durably_replica_read_latency_seconds`` by ``quantile`` (0.5, 0.99).

``durably.web`` serves the exposition at ``/metrics`` for an instance that
has metrics; without it, ``prometheus_client.start_http_server`` or any
route of your own can serve :meth:`DurablyMetrics.exposition`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..app import Durably
from ..errors import ReplicaSyncError
from ..events import Event, EventType
from ..storage.replica import Replica

__all__ = ["DurablyMetrics", "metrics_of"]

_OF: weakref.WeakKeyDictionary[Durably, DurablyMetrics] = weakref.WeakKeyDictionary()
_RUN_COUNTERS = {
    EventType.RUN_LEASED: "started",
    EventType.RUN_COMPLETE: "completed",
    EventType.RUN_FAIL: "failed",
    EventType.RUN_RETRY_SCHEDULED: "retried",
}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_of(durably: Durably) -> DurablyMetrics | None:
    """The metrics made for ``durably`` in this process, if any (what ``/metrics`` serves)."""
    return _OF.get(durably)


class DurablyMetrics:
    """Metrics of one ``Durably`` instance, in ``registry`` (a new one by default)."""

    def __init__(self, durably: Durably, registry: CollectorRegistry | None = None) -> None:
        self.durably = durably
        self.registry = CollectorRegistry() if registry is None else registry
        by_run = ("job", "queue")
        self._runs = {
            name: Counter(
                f"durably_runs_{name}",
                f"Runs {name} by this process",
                by_run,
                registry=self.registry,
            )
            for name in _RUN_COUNTERS.values()
        }
        self._run_duration = Histogram(
            "durably_run_duration_seconds",
            "Attempts of runs that completed",
            ("job",),
            registry=self.registry,
        )
        self._step_duration = Histogram(
            "durably_step_duration_seconds",
            "Steps that completed",
            ("job",),
            registry=self.registry,
        )
        self._renewal_failures = Counter(
            "durably_lease_renewal_failures", "Lease renewals that failed", registry=self.registry
        )
        self._worker_errors = Counter(
            "durably_worker_errors",
            "Errors a worker survived",
            ("context",),
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(durably))
        if durably.replica is not None:
            self.registry.register(_ReplicaCollector(durably.replica))
        self._unsubscribe = durably.on(None, self._count)
        _OF[durably] = self

    def close(self) -> None:
        """Stop counting (the registry keeps what was counted)."""
        self._unsubscribe()
        _OF.pop(self.durably, None)

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (reads the queue's state: blocking)."""
        return bytes(generate_latest(self.registry))

    async def exposition_async(self) -> bytes:
        """:meth:`exposition` in a thread, so that the event loop does not wait for the database."""
        return await asyncio.to_thread(self.exposition)

    def _count(self, event: Event) -> None:
        job = event.job_name or ""
        kind = _RUN_COUNTERS.get(event.type)
        if kind is not None:
            self._runs[kind].labels(job=job, queue=event.queue or "").inc()
        if event.type is EventType.RUN_COMPLETE and event.duration is not None:
            self._run_duration.labels(job=job).observe(event.duration)
        elif event.type is EventType.STEP_COMPLETE and event.duration is not None:
            self._step_duration.labels(job=job).observe(event.duration)
        elif event.type is EventType.WORKER_ERROR:
            self._worker_errors.labels(context=event.context or "").inc()
            if event.context == "lease-renewal":
                self._renewal_failures.inc()


class _QueueCollector(Collector):
    """The queue's state, read from the database at each scrape (the same from every process)."""

    def __init__(self, durably: Durably) -> None:
        self._durably = durably

    def collect(self) -> Iterator[Any]:
        try:
            stats = self._durably.get_queue_stats()
        except ReplicaSyncError:
            # The queue is read from a replica that cannot sync: this scrape leaves the
            # queue's gauges out, and the replica's own metrics say why.
            return
        runs = GaugeMetricFamily("durably_runs", "Active runs by status", labels=("status",))
        for status in ("pending", "running", "stale", "waiting"):
            runs.add_metric((status,), getattr(stats, status))
        yield runs
        age = stats.oldest_pending_age
        yield GaugeMetricFamily(
            "durably_oldest_pending_age_seconds",
            "Age of the oldest pending run (0 when none waits)",
            value=0.0 if age is None else age.total_seconds(),
        )


class _ReplicaCollector(Collector):
    """The embedded replica's :class:`~durably.ReplicaMetrics`, as this process measured them."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def collect(self) -> Iterator[Any]:
        metrics = self._replica.metrics()
        yield GaugeMetricFamily(
            "durably_replica_sync_lag_seconds",
            "How long the oldest write of this process has waited to reach the replica",
            value=metrics.sync_lag,
        )
        if metrics.freshness is not None:
            yield GaugeMetricFamily(
                "durably_replica_freshness_seconds",
                "Seconds since the replica's last successful sync began",
                value=metrics.freshness,
            )
        yield CounterMetricFamily(
            "durably_replica_sync_failures",
            "Replica syncs that failed",
            value=metrics.sync_failures_total,
        )
        yield GaugeMetricFamily(
            "durably_replica_recent_sync_failures",
            "Replica syncs that failed in the last 10 minutes",
            value=metrics.sync_failures,
        )
        yield CounterMetricFamily(
            "durably_replica_syncs", "Replica syncs that succeeded", value=metrics.syncs
        )
        yield GaugeMetricFamily(
            "durably_replica_size_bytes",
            "The replica's local file and its WAL",
            value=metrics.size_bytes,
        )
        yield CounterMetricFamily(
            "durably_replica_pulled_bytes",
            "Bytes received from the sync server",
            value=metrics.bytes_pulled,
        )
        latency = GaugeMetricFamily(
            "durably_replica_read_latency_seconds",
            "Queries of the last 1000 replica reads, by quantile",
            labels=("quantile",),
        )
        for quantile, value in (
            ("0.5", metrics.read_latency_p50),
            ("0.99", metrics.read_latency_p99),
        ):
            if value is not None:
                latency.add_metric((quantile,), value)
        yield latency
