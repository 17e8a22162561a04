"""Embedded replicas: the read API reads a real pyturso replica, everything durably decides
reads the primary.

The primary is the Hrana test server; its ``--mirror`` replays each committed write on a real
``tursodb --sync-server`` (tests/hrana/tursodb.py), which the replica (``turso.sync``) pulls
from, as it would pull from Turso Cloud.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import Durably, Replica, ReplicaSyncError, RunStatus, ValidationError
from tests.conftest import FAST
from tests.hrana.tursodb import MirroredPrimary, mirrored_primary


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[MirroredPrimary]:
    with mirrored_primary(tmp_path) as running:
        yield running


def make_app(
    setup: MirroredPrimary, executed: list[str] | None = None, replica: Replica | None = None
) -> Durably:
    app = Durably(setup.durably_url, replica=replica, preserve_steps=True, **FAST)
    calls = [] if executed is None else executed

    @app.job("two-steps")
    def two_steps(step: Any, input: dict[str, int]) -> int:
        a = step.run("a", lambda: calls.append("a") or input["n"])
        return int(step.run("b", lambda: calls.append("b") or a + 1))

    return app


def replica_of(setup: MirroredPrimary, tmp_path: Path, **options: Any) -> Replica:
    """A replica that syncs through the primary's URL with its token, as on Turso Cloud."""
    return Replica(tmp_path / "replica.db", **options)


def test_a_stale_replica_shows_an_older_state_and_decides_nothing(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    executed: list[str] = []
    replica = replica_of(setup, tmp_path, sync_interval=3600, read_your_writes=False)
    app = make_app(setup, executed, replica)
    other = make_app(setup)
    try:
        app.migrate()
        assert app.replica is replica
        assert app.get_runs() == []  # the first read downloads the replica
        assert replica.metrics().syncs == 1

        run = other.jobs["two-steps"].trigger({"n": 1})
        assert app.get_run(run.id) is None  # not pulled yet
        assert app.get_queue_stats().pending == 0

        # The worker claims from the primary and replays nothing it has not stored.
        assert app.process_one() is True
        assert executed == ["a", "b"]
        assert app.wait_for_run(run.id, timeout=5).output == 2
        assert app.get_run(run.id) is None  # the replica is still behind

        # Decisions read the primary: the replica has never seen this run.
        again = app.retrigger(run.id)
        assert again.status is RunStatus.PENDING
        assert other.get_run(again.id) == again
        assert replica.metrics().syncs == 1

        replica.sync()  # on demand
        assert app.get_run(run.id) == other.get_run(run.id)
        assert app.get_run(again.id) == again
        assert [s.name for s in app.get_steps(run.id)] == ["a", "b"]
        assert app.get_queue_stats().pending == 1
        assert replica.metrics().syncs == 2
    finally:
        app.close()
        other.close()


def test_read_your_writes_pulls_after_this_durably_wrote(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    replica = replica_of(setup, tmp_path)
    app = make_app(setup, [], replica)
    other = make_app(setup)
    try:
        app.migrate()
        run = app.jobs["two-steps"].trigger({"n": 5})
        assert app.get_run(run.id) == run
        syncs = replica.metrics().syncs
        assert app.get_runs() == [run]
        assert replica.metrics().syncs == syncs  # nothing written since: no pull

        theirs = other.jobs["two-steps"].trigger({"n": 7})
        assert app.get_run(theirs.id) is None  # another process's write: not yet
        assert app.process_one() is True  # the older run: this process writes its steps
        mine = app.get_run(run.id)
        assert mine is not None
        assert mine.status is RunStatus.COMPLETED
        assert mine.output == 6
        assert app.get_run(theirs.id) == other.get_run(theirs.id)  # that pull brought it too
        assert [step.name for step in app.get_steps(run.id)] == ["a", "b"]

        # A trigger inside the caller's own transaction counts once it commits.
        with app.engine.begin() as connection:
            in_transaction = app.jobs["two-steps"].trigger({"n": 9}, connection=connection)
        assert app.get_run(in_transaction.id) == in_transaction
        assert app.cancel(theirs.id).status is RunStatus.CANCELLED
        cancelled = app.get_run(theirs.id)
        assert cancelled is not None
        assert cancelled.status is RunStatus.CANCELLED
        assert replica.metrics().sync_lag == 0.0
    finally:
        app.close()
        other.close()


def test_sync_interval_pulls_in_the_background(setup: MirroredPrimary, tmp_path: Path) -> None:
    replica = replica_of(setup, tmp_path, sync_interval=0.2, read_your_writes=False)
    app = make_app(setup, [], replica)
    other = make_app(setup)
    try:
        app.migrate()
        assert app.get_runs() == []
        run = other.jobs["two-steps"].trigger({"n": 1})
        deadline = time.monotonic() + 10
        while app.get_run(run.id) is None:
            assert time.monotonic() < deadline, "the background sync never brought the run"
            time.sleep(0.05)
        assert replica.metrics().syncs >= 2
        assert replica.metrics().freshness is not None
    finally:
        app.close()
        other.close()


def test_the_thread_engine_and_the_async_api_read_the_replica(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    replica = replica_of(setup, tmp_path, sync_interval=60)
    app = make_app(setup, [], replica)
    try:
        app.migrate()
        app.start()
        run = app.jobs["two-steps"].trigger({"n": 2})
        assert app.wait_for_run(run.id, timeout=10).output == 3
        done = app.get_run(run.id)  # the worker's writes count for read-your-writes
        assert done is not None
        assert done.status is RunStatus.COMPLETED
        app.stop()
    finally:
        app.close()

    replica = replica_of(setup, tmp_path, sync_interval=60)  # the same file, opened again
    app = make_app(setup, [], replica)

    async def main() -> float:
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await app.start_async()
        try:
            assert await app.get_run_async(run.id) == done
            second = await app.jobs["two-steps"].trigger_async({"n": 4})
            assert (await app.wait_for_run_async(second.id, timeout=10)).output == 5
            got = await app.get_run_async(second.id)
            assert got is not None
            assert got.status is RunStatus.COMPLETED
            assert [s.name for s in await app.get_steps_async(second.id)] == ["a", "b"]
            await replica.sync_async()
            metrics = await replica.metrics_async()
            assert metrics.read_latency_p50 is not None
        finally:
            await app.stop_async()
            ticker.cancel()
        return max(b - a for a, b in itertools.pairwise(ticks))

    try:
        longest_gap = asyncio.run(main())
    finally:
        app.close()
    assert longest_gap < 0.5  # the loop never waited for a pull or a read


def test_a_replica_that_cannot_sync_fails_its_reads_and_nothing_else(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    executed: list[str] = []
    replica = replica_of(setup, tmp_path, sync_url=setup.sync.url)  # the sync server itself
    app = make_app(setup, executed, replica)
    try:
        app.migrate()
        assert app.get_runs() == []
        setup.mirror_may_fail = True
        setup.sync.stop()
        run = app.jobs["two-steps"].trigger({"n": 1})
        with pytest.raises(ReplicaSyncError, match=r"replica\.db.*could not sync from http://"):
            app.get_run(run.id)
        with pytest.raises(ReplicaSyncError):
            replica.sync()
        metrics = replica.metrics()
        assert metrics.sync_failures == 2
        assert metrics.last_sync_error is not None
        assert "Connection refused" in metrics.last_sync_error
        assert metrics.sync_lag > 0
        # The primary decides and runs everything without the replica.
        assert app.process_one() is True
        assert app.wait_for_run(run.id, timeout=5).output == 2
        assert executed == ["a", "b"]
    finally:
        app.close()


def test_the_replica_syncs_with_the_primarys_token_unless_given_its_own(
    setup: MirroredPrimary, tmp_path: Path
) -> None:
    refused = replica_of(setup, tmp_path, auth_token="not-the-token")
    app = make_app(setup, [], refused)
    try:
        app.migrate()
        with pytest.raises(ReplicaSyncError, match=r"could not sync from http://127\.0\.0\.1"):
            app.get_runs()
        assert refused.metrics().sync_failures == 1
        assert app.process_one() is False  # the primary is fine
    finally:
        app.close()
    assert any(
        e.get("status") == 401 and e["path"] == "/pull-updates" for e in setup.primary.trace()
    )

    trusted = Replica(tmp_path / "trusted.db")  # the primary's token
    app = make_app(setup, [], trusted)
    try:
        assert app.get_runs() == []
        assert trusted.metrics().syncs == 1
    finally:
        app.close()
    assert any(e.get("forwarded") == 200 for e in setup.primary.trace())


def test_a_replica_needs_a_remote_primary_and_a_way_to_sync(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="remote libSQL server"):
        Durably(f"sqlite:///{tmp_path / 'app.db'}", replica=tmp_path / "replica.db")
    with pytest.raises(ValidationError, match="sync_interval must be positive"):
        Replica(tmp_path / "replica.db", sync_interval=0)
    with pytest.raises(ValidationError, match="sync only once"):
        Replica(tmp_path / "replica.db", read_your_writes=False)
    with pytest.raises(ValidationError, match="sync_url must be"):
        Replica(tmp_path / "replica.db", sync_url="ftp://example.com")
    with pytest.raises(ValidationError, match="serves no Durably"):
        Replica(tmp_path / "replica.db").sync()


def test_one_replica_serves_one_durably(setup: MirroredPrimary, tmp_path: Path) -> None:
    replica = replica_of(setup, tmp_path)
    app = make_app(setup, [], replica)
    try:
        with pytest.raises(ValidationError, match="already serves another Durably"):
            make_app(setup, [], replica)
    finally:
        app.close()
    again = make_app(setup, [], replica)  # closed: free again
    again.close()


def test_a_slow_pull_stalls_no_other_thread_and_no_read_for_longer_than_lock_timeout(
    tmp_path: Path,
) -> None:
    """Each sync request waits 1 s on its way to the sync server (a slow network)."""
    with mirrored_primary(tmp_path, "--forward-delay", "1") as slow:
        replica = Replica(tmp_path / "replica.db")
        app = Durably(slow.durably_url, replica=replica, lock_timeout=0.3)
        try:
            app.migrate()
            ticks = 0
            done = threading.Event()

            def tick() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    time.sleep(0.01)

            ticker = threading.Thread(target=tick)
            ticker.start()
            started = time.monotonic()
            try:
                replica.sync()  # opens: a download and a pull, 1 s each at least
            finally:
                done.set()
                ticker.join()
            took = time.monotonic() - started
            assert took >= 2
            assert ticks >= took * 100 * 0.25  # the other thread kept running: no GIL held

            puller = threading.Thread(target=replica.sync)
            puller.start()
            time.sleep(0.1)
            with pytest.raises(ReplicaSyncError, match=r"has been syncing .* more than 0\.3s"):
                app.get_runs()
            puller.join()
            assert app.get_runs() == []
        finally:
            app.close()
