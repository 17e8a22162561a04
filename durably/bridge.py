"""Crossing between threads and event loops.

Workers, the heartbeat and the database threads signal each other from any
thread; an asyncio task can only wait on loop objects. The helpers here do
that crossing in one place.

:class:`LoopThread` is an event loop in a thread of its own. The thread engine and the synchronous ``process_one`` execute ``async def``
jobs here: the calling thread submits the coroutine and blocks until it is
done, exactly as it would for a ``def`` job, while the job's awaits run on a
real event loop. One loop serves every run of the process, so async jobs
executed by different worker threads share it like tasks of an ASGI app do.

:class:`Threads` goes the other way: event-loop code awaits a blocking call
(a database operation, a ``def`` step) run in a thread.

:data:`job_loops` and :func:`blocking` keep blocking API calls off the loops
that run durably's jobs, where they would stall every job on the loop and a
wait for a run would wait for that very loop: a deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from asyncio import _get_running_loop
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from typing_extensions import ParamSpec

from .errors import BlockingCallError

T = TypeVar("T")
P = ParamSpec("P")


class JobLoops:
    """The event loops durably's jobs run on, each counted once per user of it.

    The loop an asyncio engine was started on (two ``Durably`` instances may
    share one), and durably's own loop thread where ``async def`` jobs run for
    the thread engine and ``process_one``. Loops are held until removed: an
    engine's loop until its stop, the loop thread's until it stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[asyncio.AbstractEventLoop, int] = {}

    def add(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._counts[loop] = self._counts.get(loop, 0) + 1

    def discard(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            count = self._counts.pop(loop, 0) - 1
            if count > 0:
                self._counts[loop] = count

    def __contains__(self, loop: object) -> bool:
        return loop in self._counts


job_loops = JobLoops()


def blocking(method: Callable[P, T]) -> Callable[P, T]:
    """Mark an API method that blocks: on a loop of :data:`job_loops` it raises at once.

    :class:`~durably.errors.BlockingCallError` names the method's ``_async``
    twin. Any other caller pays one C call (is a loop running in this
    thread?): triggers are on the hot path.
    """
    name = method.__name__

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        refuse_blocking(args[0], name)
        return method(*args, **kwargs)

    return guarded


def refuse_blocking(receiver: object, name: str) -> None:
    """Raise :class:`~durably.errors.BlockingCallError` if this thread runs a loop of
    :data:`job_loops`: ``receiver.name()`` is about to block."""
    loop = _get_running_loop()
    if loop is not None and loop in job_loops:
        raise BlockingCallError(_blocked(f"{type(receiver).__name__}.{name}()", name))


def _blocked(called: str, name: str) -> str:
    return (
        f"{called} blocks, and was called on an event loop that runs durably's jobs (the "
        "asyncio engine's loop, or durably's own, where async def jobs run for the thread "
        "engine): it would stall every job on that loop, and a wait for a run there can wait forever. Use "
        f"`await {name}_async(...)` instead, or make the call in a thread (asyncio.to_thread)."
    )


class LoopThread:
    """Starts on first use; :meth:`stop` ends the loop and joins the thread.

    ``runs_jobs``: durably's jobs run on this loop, so it joins :data:`job_loops`.
    """

    def __init__(self, name: str = "durably-loop", *, runs_jobs: bool = False) -> None:
        self._name = name
        self._runs_jobs = runs_jobs
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block the calling thread until it returns or raises.

        Whatever ``coro`` raises is raised here, in the calling thread,
        including ``SystemExit`` and ``KeyboardInterrupt``: raised inside a
        task they would stop the loop itself and every other run on it.
        """
        loop = self._ensure_started()
        if running_loop() is loop:
            coro.close()
            raise RuntimeError("LoopThread.run() called from its own loop: it would deadlock")
        outcome = asyncio.run_coroutine_threadsafe(_captured(coro), loop).result()
        if isinstance(outcome, _Raised):
            raise outcome.exc
        return outcome

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                try:
                    loop.run_forever()
                finally:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                    loop.close()

            self._thread = threading.Thread(target=main, name=self._name, daemon=True)
            self._thread.start()
            started.wait()
            self._loop = loop
            if self._runs_jobs:
                job_loops.add(loop)
            return loop

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
        if self._runs_jobs:
            job_loops.discard(loop)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _captured(coro: Coroutine[Any, Any, T]) -> T | _Raised:
    try:
        return await coro
    except BaseException as exc:  # carried to the calling thread, not left to the loop
        return _Raised(exc)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def threadsafe_setter(event: asyncio.Event) -> Callable[[], None]:
    """A function that sets ``event`` (of the running loop) from any thread.

    Once the loop is closed nobody can be waiting on the event, so a late
    call does nothing.
    """
    loop = asyncio.get_running_loop()

    def set_event() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)

    return set_event


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True if it was set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


class Threads:
    """Daemon threads that event-loop code hands blocking calls to: ``await threads.run(fn)``.

    What ``loop.run_in_executor`` does with a ``ThreadPoolExecutor``, for
    less: no ``concurrent.futures.Future`` chained to an asyncio one, just
    the loop's future, resolved with one ``call_soon_threadsafe``: about
    half the cost per round trip.

    The threads start on first use and wait on one queue. A call whose
    awaiting task was cancelled still runs to its end in its thread; its
    result is dropped.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in one of the threads; its result or its exception."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.submit(
            functools.partial(fn, *args, **kwargs), functools.partial(settle_future, future)
        )
        return await future

    def submit(
        self, fn: Callable[[], T], deliver: Callable[[T | None, BaseException | None], None]
    ) -> None:
        """Call ``fn()`` in one of the threads, then ``deliver(result, error)`` on this loop.

        ``deliver`` gets ``(result, None)`` or ``(None, exception)``, in one
        ``call_soon_threadsafe`` from the thread: the cheapest way back.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._shut_down:
                raise RuntimeError(f"{self._name} threads are shut down")
            if not self._threads:
                self._start()
            self._calls.put(_Call(loop, fn, deliver))

    def shutdown(self, wait: bool = True) -> None:
        """Let calls already queued finish; refuse new ones; with ``wait``, join the threads."""
        with self._lock:
            self._shut_down = True
            threads = list(self._threads)
            for _ in threads:
                self._calls.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _start(self) -> None:
        for number in range(self._size):
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call.run()


class _Call:
    __slots__ = ("deliver", "fn", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[], Any],
        deliver: Callable[[Any, BaseException | None], None],
    ) -> None:
        self.loop = loop
        self.fn = fn
        self.deliver = deliver

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as exc:  # carried to the loop, as an executor does
            self._deliver(None, exc)
        else:
            self._deliver(result, None)

    def _deliver(self, result: Any, error: BaseException | None) -> None:
        # A closed loop has nobody left waiting.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.deliver, result, error)


def settle_future(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve ``future`` with ``result``, or ``error`` when there is one, unless it was cancelled."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


async def run_in(threads: Threads | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in ``threads``, or in the loop's default executor when there are none."""
    if threads is None:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    return await threads.run(fn, *args)
