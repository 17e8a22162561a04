"""Crossing between threads and event loops.

Workers, the heartbeat and the database threads signal each other from any
thread; an asyncio task can only wait on loop objects. The helpers here do
that crossing in one place.

:class:`LoopThread` is an event loop in a thread of its own. The thread engine and the synchronous ``process_one`` execute ``async def``
jobs here: the calling thread submits the coroutine and blocks until it is
done, exactly as it would for a ``def`` job, while the job's awaits run on a
real event loop. One loop serves every run of the process, so async jobs
executed by different worker threads share it like tasks of an ASGI app do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Starts on first use; :meth:`stop` ends the loop and joins the thread."""

    def __init__(self, name: str = "durably-loop") -> None:
        self._name = name
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
            return loop

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
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
