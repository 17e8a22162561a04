"""W1 (enqueue), W2 (end to end) and W3 (latency) on durably, in this process.

An :class:`Engine` runs each workload one way. :class:`ThreadEngine` uses
``durably.start()``; :class:`AsyncioEngine` uses the asyncio API
(``start_async``, ``trigger_async``...) and reports itself unavailable when
the installed durably has no such API, so the bench runs against older
versions too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from durably import Durably, Job

from . import history
from .apps import JOB, AppConfig, Target, build, build_async, inputs


@dataclass(frozen=True)
class Throughput:
    """``count`` items done in ``seconds``; ``capped`` when the time cap stopped it early."""

    count: int
    seconds: float
    planned: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def capped(self) -> bool:
        return self.count < self.planned


class Engine(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """Why this engine cannot run here, or None."""

    def enqueue_single(self, target: Target, count: int, cap: float) -> Throughput: ...

    def enqueue_batch(self, target: Target, count: int) -> Throughput: ...

    def end_to_end(
        self, target: Target, runs: int, cap: float, synchronous: str, history_runs: int = 0
    ) -> Throughput: ...

    def latency(self, target: Target, repetitions: int) -> list[float]: ...


class _Completions:
    """Counts ``run:complete`` events; ``done`` is set at ``expected``. Thread-safe."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, _event: object) -> None:
        with self._lock:
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


def _migrated(target: Target, synchronous: str = "NORMAL") -> Durably:
    durably = build(AppConfig(target.url, max_concurrent_runs=4, synchronous=synchronous))
    durably.migrate()
    return durably


def _job(durably: Durably) -> Job[Any, Any]:
    job = durably.get_job(JOB)
    assert job is not None
    return job


class ThreadEngine:
    """durably's thread worker (``durably.start()``), the engine of WSGI apps and scripts."""

    name = "thread"

    def unavailable(self) -> str | None:
        return None

    def enqueue_single(self, target: Target, count: int, cap: float) -> Throughput:
        with _migrated(target) as durably:
            job = _job(durably)
            deadline = time.perf_counter() + cap
            started = time.perf_counter()
            done = 0
            for item in inputs(count):
                job.trigger(item)
                done += 1
                if time.perf_counter() > deadline:
                    break
            return Throughput(done, time.perf_counter() - started, count)

    def enqueue_batch(self, target: Target, count: int) -> Throughput:
        with _migrated(target) as durably:
            job = _job(durably)
            items = inputs(count)
            started = time.perf_counter()
            job.batch_trigger(items)
            return Throughput(count, time.perf_counter() - started, count)

    def end_to_end(
        self, target: Target, runs: int, cap: float, synchronous: str, history_runs: int = 0
    ) -> Throughput:
        """Trigger ``runs`` first, then time one 4-slot worker from start to the last completion."""
        if history_runs:
            history.copy_into(target.path, history_runs)
        with _migrated(target, synchronous) as durably:
            job = _job(durably)
            job.batch_trigger(inputs(runs))
            completions = _Completions(runs)
            durably.on("run:complete", completions)
            started = time.perf_counter()
            durably.start()
            completions.done.wait(cap)
            elapsed = time.perf_counter() - started
            count = completions.count
            durably.stop()
            return Throughput(count, elapsed, runs)

    def latency(self, target: Target, repetitions: int) -> list[float]:
        """Seconds from ``trigger`` to ``wait_for_run`` returning, an idle worker waiting."""
        with _migrated(target) as durably:
            job = _job(durably)
            durably.start()
            samples = []
            for n in range(repetitions):
                time.sleep(0.01)  # let the worker go idle again
                started = time.perf_counter()
                run = job.trigger({"n": n})
                durably.wait_for_run(run.id, timeout=30)
                samples.append(time.perf_counter() - started)
            return samples


class AsyncioEngine:
    """durably's asyncio worker (``await durably.start_async()``), for ASGI apps.

    Each workload is one ``asyncio.run``; the event loop is the caller's, as
    in an ASGI app, and the job is an ``async def`` with ``await step.run``.
    """

    name = "asyncio"
    REQUIRED = ("start_async", "stop_async", "wait_for_run_async", "migrate_async")

    def unavailable(self) -> str | None:
        missing = [name for name in self.REQUIRED if not hasattr(Durably, name)]
        return f"not available: no Durably.{missing[0]}() yet" if missing else None

    def enqueue_single(self, target: Target, count: int, cap: float) -> Throughput:
        async def main() -> Throughput:
            durably, job = await self._open(target)
            try:
                deadline = time.perf_counter() + cap
                started = time.perf_counter()
                done = 0
                for item in inputs(count):
                    await job.trigger_async(item)
                    done += 1
                    if time.perf_counter() > deadline:
                        break
                return Throughput(done, time.perf_counter() - started, count)
            finally:
                await durably.close_async()

        return asyncio.run(main())

    def enqueue_batch(self, target: Target, count: int) -> Throughput:
        async def main() -> Throughput:
            durably, job = await self._open(target)
            try:
                items = inputs(count)
                started = time.perf_counter()
                await job.batch_trigger_async(items)
                return Throughput(count, time.perf_counter() - started, count)
            finally:
                await durably.close_async()

        return asyncio.run(main())

    def end_to_end(
        self, target: Target, runs: int, cap: float, synchronous: str, history_runs: int = 0
    ) -> Throughput:
        if history_runs:
            history.copy_into(target.path, history_runs)

        async def main() -> Throughput:
            durably, job = await self._open(target, synchronous)
            try:
                await job.batch_trigger_async(inputs(runs))
                loop = asyncio.get_running_loop()
                finished: asyncio.Future[None] = loop.create_future()
                completions = _Completions(runs)

                def on_complete(event: object) -> None:
                    completions(event)
                    if completions.done.is_set():
                        loop.call_soon_threadsafe(_resolve, finished)

                durably.on("run:complete", on_complete)
                started = time.perf_counter()
                await durably.start_async()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(finished), cap)
                elapsed = time.perf_counter() - started
                count = completions.count
                await durably.stop_async()
                return Throughput(count, elapsed, runs)
            finally:
                await durably.close_async()

        return asyncio.run(main())

    def latency(self, target: Target, repetitions: int) -> list[float]:
        async def main() -> list[float]:
            durably, job = await self._open(target)
            try:
                await durably.start_async()
                samples = []
                for n in range(repetitions):
                    await asyncio.sleep(0.01)
                    started = time.perf_counter()
                    run = await job.trigger_async({"n": n})
                    await durably.wait_for_run_async(run.id, timeout=30)
                    samples.append(time.perf_counter() - started)
                return samples
            finally:
                await durably.close_async()

        return asyncio.run(main())

    @staticmethod
    async def _open(target: Target, synchronous: str = "NORMAL") -> tuple[Any, Any]:
        """The app and its job, typed ``Any``: older durably versions lack the ``_async`` API."""
        config = AppConfig(target.url, max_concurrent_runs=4, synchronous=synchronous)
        durably: Any = build_async(config)
        await durably.migrate_async()
        return durably, _job(durably)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


ENGINES: tuple[Engine, ...] = (ThreadEngine(), AsyncioEngine())


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 50 samples is the 48th smallest)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    return statistics.median(samples)
