"""The writes an event loop's tasks make together travel to the database together.

Driven on every driver (real files and the remote server) through the
runtime's own :class:`~durably.storage.commit.loop.LoopCommit`, with the trips
counted where they reach :meth:`Database.write_batches`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from durably import ConflictError, Disposition, Durably, DurablyError, testing
from durably.clock import now_ms
from durably.core import enqueue as runs
from durably.jobs import build_request
from durably.storage import Batch, Outcome
from tests.faults import hold_write_lock

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def _new_run(n: int) -> Batch:
    return runs.new_runs([build_request("w", {"n": n})], now_ms())[1]


@pytest.fixture
def trips(durably: Durably, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many batches each trip to the database carried, in order."""
    durably.job("w")(lambda step, input: None)
    db = testing.database(durably)
    real = db.write_batches
    carried: list[int] = []

    def counting(batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        carried.append(len(batches))
        return real(batches)

    monkeypatch.setattr(db, "write_batches", counting)
    return carried


def _stored(durably: Durably) -> list[int]:
    return sorted(r.input["n"] for r in durably.get_runs(job_name="w"))


def test_batches_written_in_one_turn_of_the_loop_travel_together(
    durably: Durably, trips: list[int]
) -> None:
    loop_commit = testing.async_database(durably)

    async def main() -> list[list[Outcome]]:
        return await asyncio.gather(*(loop_commit.write_batch(_new_run(n)) for n in range(5)))

    results = run(main())

    assert trips == [5]
    assert [[o.rowcount for o in outcomes] for outcomes in results] == [[1]] * 5
    assert _stored(durably) == [0, 1, 2, 3, 4]


def test_batches_written_while_a_trip_is_under_way_go_together_on_the_next(
    durably: Durably, trips: list[int], driver: str
) -> None:
    if driver == "postgresql":
        pytest.skip(
            "SQLite only: the trip waits behind durably's write lock; "
            "PostgreSQL's writes have none to wait for"
        )
    loop_commit = testing.async_database(durably)
    holder, release = hold_write_lock(testing.database(durably))

    async def main() -> list[list[Outcome]]:
        first = loop_commit.write_batch(_new_run(0))
        while not trips:  # the first trip has reached its thread, and waits for the lock
            await asyncio.sleep(0.001)
        later = []
        for n in range(1, 4):  # each in a turn of its own
            later.append(loop_commit.write_batch(_new_run(n)))
            await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(first, *later)

    results = run(main())
    holder.join(10)

    assert trips == [1, 3]
    assert [[o.rowcount for o in outcomes] for outcomes in results] == [[1]] * 4
    assert _stored(durably) == [0, 1, 2, 3]


def test_a_failing_batch_gets_its_own_error_and_the_others_are_written(
    durably: Durably, trips: list[int]
) -> None:
    loop_commit = testing.async_database(durably)
    taken = _new_run(7)
    testing.database(durably).write_batch(taken)

    async def main() -> list[list[Outcome] | BaseException]:
        batches = [_new_run(1), taken, _new_run(2)]
        return await asyncio.gather(
            *(loop_commit.write_batch(batch) for batch in batches), return_exceptions=True
        )

    one, duplicate, two = run(main())

    assert trips == [3]
    assert isinstance(duplicate, DurablyError)
    assert isinstance(one, list)
    assert isinstance(two, list)
    assert [[o.rowcount for o in one], [o.rowcount for o in two]] == [[1], [1]]
    assert _stored(durably) == [1, 2, 7]


def test_a_writer_that_stops_waiting_does_not_take_its_batch_back(
    durably: Durably, trips: list[int]
) -> None:
    loop_commit = testing.async_database(durably)

    async def main() -> list[Outcome]:
        cancelled = asyncio.ensure_future(loop_commit.write_batch(_new_run(1)))
        other = loop_commit.write_batch(_new_run(2))
        await asyncio.sleep(0)
        cancelled.cancel()
        return await other

    assert [o.rowcount for o in run(main())] == [1]
    assert trips == [2]
    assert _stored(durably) == [1, 2]


def test_a_write_after_the_database_threads_shut_down_is_refused(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably()
    durably.job("w")(lambda step, input: None)
    testing.async_database(durably).threads.shutdown()

    async def main() -> None:
        await testing.async_database(durably).write_batch(_new_run(1))

    with pytest.raises(RuntimeError, match="shut down"):
        run(main())
    assert _stored(durably) == []


def test_concurrent_triggers_share_a_trip_and_each_gets_its_own_run(
    durably: Durably, trips: list[int]
) -> None:
    """An ASGI app's request handlers trigger at once: one transaction, as many answers."""
    job = durably.get_job("w")
    assert job is not None
    waiting = job.trigger({"n": 0}, concurrency_key="tenant-1")
    announced: list[str] = []
    durably.on("run:trigger", lambda event: announced.append(str(event.run_id)))

    async def main() -> list[Any]:
        return await asyncio.gather(
            job.trigger_async({"n": 1}),
            job.trigger_async({"n": 2}, idempotency_key="order-9"),
            job.trigger_async({"n": 3}, idempotency_key="order-9"),
            job.trigger_async({"n": 4}, concurrency_key="tenant-1"),
            job.trigger_async({"n": 5}, concurrency_key="tenant-1", coalesce="skip"),
            job.trigger_async({"n": 6}, labels={"plan": "pro"}),
            return_exceptions=True,
        )

    plain, keyed, again, conflicting, coalesced, labelled = run(main())

    assert trips[0] == 6  # every trigger's insert went in the first trip
    assert isinstance(conflicting, ConflictError)
    assert (keyed.disposition, again.disposition) == (Disposition.CREATED, Disposition.IDEMPOTENT)
    assert (again.id, again.input) == (keyed.id, {"n": 2})
    assert (coalesced.disposition, coalesced.id) == (Disposition.COALESCED, waiting.id)
    assert labelled.labels == {"plan": "pro"}
    assert sorted(announced) == sorted([plain.id, keyed.id, labelled.id])
    assert _stored(durably) == [0, 1, 2, 6]
    assert durably.get_run(labelled.id) == labelled
