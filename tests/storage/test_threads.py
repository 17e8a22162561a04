"""``Threads``: how the asyncio engine awaits blocking calls (database operations, ``def`` steps).

It replaces ``loop.run_in_executor`` on the engine's hot path, so it must keep
what the executor gave: results and exceptions reach the awaiting task, a
cancelled await neither breaks the thread nor resurrects the result, nothing
runs on the event loop's thread, and shutting down lets queued calls finish.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from durably.bridge import Threads


class Boom(Exception):
    pass


def test_results_and_exceptions_reach_the_awaiting_task_from_another_thread() -> None:
    threads = Threads(2, "test")

    def where(value: int) -> tuple[int, str]:
        return value * 2, threading.current_thread().name

    def fails() -> None:
        raise Boom("in the thread")

    async def main() -> None:
        value, name = await threads.run(where, 21)
        assert value == 42
        assert name.startswith("test-")
        with pytest.raises(Boom, match="in the thread"):
            await threads.run(fails)
        # kwargs travel too
        assert await threads.run(lambda *, x: x + 1, x=1) == 2

    asyncio.run(main())
    threads.shutdown()


def test_calls_run_concurrently_up_to_the_number_of_threads() -> None:
    threads = Threads(3, "test")
    barrier = threading.Barrier(3, timeout=5)

    async def main() -> list[int]:
        # Three calls that each wait for the other two: they only return if
        # all three run at the same time, in three threads.
        return await asyncio.gather(*(threads.run(barrier.wait) for _ in range(3)))

    assert sorted(asyncio.run(main())) == [0, 1, 2]
    threads.shutdown()


def test_a_cancelled_await_lets_the_call_finish_and_drops_its_result() -> None:
    threads = Threads(1, "test")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        finished.set()
        return "late"

    async def main() -> str:
        task = asyncio.create_task(threads.run(slow))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.05)  # the dropped result's callback runs on the loop: no error
        # The one thread is free again.
        return await threads.run(lambda: "next")

    assert asyncio.run(main()) == "next"
    assert finished.is_set()
    threads.shutdown()


def test_a_result_for_a_closed_loop_is_dropped_without_killing_the_thread() -> None:
    threads = Threads(1, "test")
    release = threading.Event()

    def waits() -> str:
        release.wait(5)
        return "too late"

    async def abandon() -> None:
        asyncio.get_running_loop().create_task(threads.run(waits))
        await asyncio.sleep(0.05)

    asyncio.run(abandon())  # the loop closes with the call still running
    release.set()
    time.sleep(0.05)

    async def again() -> str:
        return await threads.run(lambda: "still serving")

    assert asyncio.run(again()) == "still serving"
    threads.shutdown()


def test_shutdown_lets_queued_calls_finish_then_refuses_new_ones() -> None:
    threads = Threads(1, "test")
    done: list[int] = []

    def record(n: int) -> None:
        time.sleep(0.01)
        done.append(n)

    async def main() -> None:
        tasks = [asyncio.create_task(threads.run(record, n)) for n in range(5)]
        await asyncio.sleep(0)  # all five are queued
        await asyncio.to_thread(threads.shutdown, True)
        assert done == [0, 1, 2, 3, 4]
        await asyncio.gather(*tasks)
        with pytest.raises(RuntimeError, match="shut down"):
            await threads.run(record, 5)

    asyncio.run(main())
    assert not any(t.name.startswith("test-") and t.is_alive() for t in threading.enumerate())
