"""``replica.metrics()`` and the replica's Prometheus metrics, measured on a real pyturso
replica of the mirrored primary (tests/hrana/tursodb.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from durably import Durably, Replica, ReplicaMetrics, ReplicaSyncError
from durably.contrib.prometheus import DurablyMetrics
from tests.conftest import FAST
from tests.hrana.tursodb import MirroredPrimary, mirrored_primary


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[MirroredPrimary]:
    with mirrored_primary(tmp_path) as running:
        yield running


def make_app(setup: MirroredPrimary, replica: Replica | None = None) -> Durably:
    app = Durably(setup.durably_url, replica=replica, **FAST)

    @app.job("echo")
    def echo(step: Any, input: dict[str, str]) -> str:
        return str(step.run("echo", lambda: input["text"]))

    return app


def local_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_metrics_follow_syncs_reads_and_unsynced_writes(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    path = tmp_path / "replica.db"
    replica = Replica(path, sync_interval=3600, read_your_writes=False, sync_url=setup.sync.url)
    app = make_app(setup, replica)
    other = make_app(setup)
    try:
        app.migrate()
        before = replica.metrics()
        assert before == ReplicaMetrics(
            sync_lag=0.0,
            freshness=None,
            sync_failures=0,
            sync_failures_total=0,
            last_sync_error=None,
            size_bytes=0,
            read_latency_p50=None,
            read_latency_p99=None,
            bytes_pulled=0,
            syncs=0,
        )

        for _ in range(20):
            assert app.get_runs() == []
        opened = replica.metrics()
        assert opened.syncs == 1
        assert opened.bytes_pulled > 0  # the first download
        assert opened.size_bytes == local_size(path) > 0
        assert opened.read_latency_p50 is not None
        assert opened.read_latency_p99 is not None
        assert 0 < opened.read_latency_p50 <= opened.read_latency_p99 < 1
        assert opened.freshness is not None
        assert opened.sync_lag == 0.0

        # Another process's writes: the replica does not know of them until it pulls.
        for n in range(50):
            other.jobs["echo"].trigger({"text": "x" * 1000 + str(n)})
        assert replica.metrics().sync_lag == 0.0
        # This Durably's write: the replica lacks it, and the lag grows until a pull.
        app.jobs["echo"].trigger({"text": "mine"})
        first = replica.metrics().sync_lag
        time.sleep(0.3)
        waiting = replica.metrics()
        assert waiting.sync_lag >= first + 0.3
        assert waiting.freshness is not None
        assert opened.freshness is not None
        assert waiting.freshness >= opened.freshness + 0.3

        replica.sync()
        synced = replica.metrics()
        assert synced.syncs == 2
        assert synced.sync_lag == 0.0
        assert synced.freshness is not None
        assert synced.freshness < waiting.freshness
        assert synced.bytes_pulled > opened.bytes_pulled + 50_000  # 51 runs of 1 kB
        assert synced.size_bytes == local_size(path) > opened.size_bytes
        assert len(app.get_runs()) == 51
    finally:
        app.close()
        other.close()


def exposition(metrics: DurablyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def test_prometheus_reports_the_replica(setup: MirroredPrimary, tmp_path: Path) -> None:
    replica = Replica(tmp_path / "replica.db", sync_url=setup.sync.url)
    app = make_app(setup, replica)
    try:
        app.migrate()
        metrics = DurablyMetrics(app)
        assert app.get_queue_stats().pending == 0  # reads the replica
        samples = exposition(metrics)
        state = replica.metrics()
        assert samples[("durably_runs", (("status", "pending"),))] == 0
        assert samples[("durably_replica_syncs_total", ())] == state.syncs == 1
        assert samples[("durably_replica_pulled_bytes_total", ())] == state.bytes_pulled > 0
        assert samples[("durably_replica_size_bytes", ())] == state.size_bytes > 0
        assert samples[("durably_replica_sync_lag_seconds", ())] == 0.0
        assert samples[("durably_replica_sync_failures_total", ())] == 0
        assert samples[("durably_replica_recent_sync_failures", ())] == 0
        assert 0 <= samples[("durably_replica_freshness_seconds", ())] < 60
        for quantile in ("0.5", "0.99"):
            assert samples[("durably_replica_read_latency_seconds", (("quantile", quantile),))] > 0

        setup.mirror_may_fail = True
        setup.sync.stop()
        app.jobs["echo"].trigger({"text": "x"})
        for _ in range(3):
            with pytest.raises(ReplicaSyncError, match="could not sync"):
                app.get_runs()
        samples = exposition(metrics)  # the queue's gauges are left out: their read fails
        assert ("durably_runs", (("status", "pending"),)) not in samples
        assert samples[("durably_replica_sync_failures_total", ())] >= 3
        assert samples[("durably_replica_recent_sync_failures", ())] >= 3
        assert samples[("durably_replica_sync_lag_seconds", ())] > 0
        metrics.close()
    finally:
        app.close()


def test_no_replica_no_replica_metrics(setup: MirroredPrimary) -> None:
    app = make_app(setup)
    try:
        app.migrate()
        names = {name for name, _ in exposition(DurablyMetrics(app))}
        assert not any(name.startswith("durably_replica_") for name in names)
        assert app.replica is None
    finally:
        app.close()


def test_metrics_are_taken_without_waiting_for_a_sync(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    """The sizes are the files' own: metrics never open or pull the replica."""
    path = tmp_path / "replica.db"
    replica = Replica(path, sync_url=setup.sync.url)
    app = make_app(setup, replica)
    try:
        replica.metrics()
        assert not os.path.exists(path)
    finally:
        app.close()


def test_failed_background_pulls_are_counted_and_logged(
    setup: MirroredPrimary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    replica = Replica(tmp_path / "replica.db", sync_interval=0.1, read_your_writes=False)
    app = make_app(setup, replica)
    try:
        app.migrate()
        assert app.get_runs() == []
        setup.mirror_may_fail = True
        setup.sync.stop()  # the primary stays up; what it forwards the pulls to does not
        deadline = time.monotonic() + 10
        while replica.metrics().sync_failures < 3:
            assert time.monotonic() < deadline, "the background pulls never failed"
            time.sleep(0.05)
        metrics = replica.metrics()
        assert metrics.sync_failures_total >= 3
        assert metrics.last_sync_error is not None
        assert metrics.freshness is not None
        assert metrics.freshness > 0.2  # more than twice the interval: the guide's warning
        assert app.get_runs() == []  # reads go on from the replica, stale
        assert any("could not sync" in r.getMessage() for r in caplog.records)
    finally:
        app.close()
