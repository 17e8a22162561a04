"""Stopping the worker engine when the process is told to stop (SIGTERM, SIGINT).

Python leaves SIGTERM to the operating system, which ends the process on the
spot: no ``finally:`` block and no ``atexit`` handler runs, so the engine is
never stopped. Its runs stay leased until their lease expires
(``stale_threshold``) and its worker row stays. The handlers installed here
stop the engine first (its ordinary ``stop``, bounded by a timeout: in-flight
runs get that long, the rest are handed back, the worker deregisters), then
let the signal go on as before: the handler that was installed before is
called, or the process ends as the signal would have ended it, but through an
exception, so that ``finally:`` blocks and ``atexit`` handlers run.

Python calls a handler in the main thread, between two bytecodes of whatever
that thread was doing, and that thread may hold a lock the stop needs (in
``start()``, or in a trigger's write). So the thread engine is stopped in a
thread of its own, which the handler waits for at most the timeout plus
:data:`STOP_MARGIN`; a stop held up so finishes once the signal has gone on
and the main thread has let go of what it held. The asyncio engine is stopped
on its loop; when that loop is the main thread's, the handler cannot wait for
it (the loop would never get to run), so it schedules the stop on the loop
and the signal goes on from there once the engine is stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import FrameType
from typing import Any

from ..bridge import running_loop
from ..errors import NotMainThreadError, ValidationError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

StopEngine = Callable[[float, Callable[[], None]], None]
"""``stop(timeout, then)``: stop the engine, then call ``then`` (at once, or later on its loop)."""

STOP_MARGIN = 5.0
"""Seconds beyond the timeout a handler waits for a stop in another thread or loop.

That thread or loop may itself be blocked; the signal must go on regardless.
"""

_tasks: set[asyncio.Task[None]] = set()
"""Stops scheduled on a loop by a handler, held so that they are not garbage-collected."""


def install(stop: StopEngine, timeout: float, signals: Iterable[int]) -> Callable[[], None]:
    """Handle ``signals`` with ``stop``; returns a function that puts the old handlers back."""
    _require_main_thread("install_signal_handlers()")
    timeout = _check_timeout(timeout)
    wanted = _check_signals(signals)
    previous: dict[int, Any] = {}
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping

        def go_on() -> None:
            nonlocal stopping
            stopping = False
            chain(previous[signum], signum, frame)

        if stopping:
            # The second signal of an impatient operator: no second wait.
            go_on()
            return
        stopping = True
        stop(timeout, go_on)

    def restore() -> None:
        _require_main_thread("removing signal handlers")
        for signum, old in previous.items():
            if signal.getsignal(signum) is handler:
                # None: a handler not installed from Python, which Python cannot put back.
                signal.signal(signum, signal.SIG_DFL if old is None else old)

    for signum in wanted:
        old = signal.getsignal(signum)
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError) as exc:  # SIGKILL, SIGSTOP, a number out of range
            restore()
            raise ValidationError(f"Cannot handle signal {signum!r}: {exc}") from None
        previous[signum] = old
    return restore


def chain(previous: Any, signum: int, frame: FrameType | None) -> None:
    """Do what the signal did before durably's handler was installed."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        # The default action ends the process, as status 128 + signum to a shell;
        # SystemExit does the same, and lets finally: blocks and atexit run.
        raise SystemExit(128 + signum)


def stop_in_thread(stop: Callable[[], None], timeout: float, then: Callable[[], None]) -> None:
    """Run ``stop`` (the thread engine's) in a thread; wait for it a while, then call ``then``.

    The thread is not a daemon: one still waiting for a lock the interrupted
    main thread held goes on once ``then`` has let that thread unwind, and
    the interpreter waits for it before it exits.
    """
    thread = threading.Thread(target=stop, name="durably-signal-stop")
    thread.start()
    try:
        thread.join(timeout + STOP_MARGIN)
    finally:
        then()


def stop_on_loop(
    loop: asyncio.AbstractEventLoop,
    stopping: Coroutine[Any, Any, None],
    timeout: float,
    then: Callable[[], None],
) -> None:
    """Await ``stopping`` (the asyncio engine's stop) on ``loop``, then call ``then``."""
    if running_loop() is loop:
        loop.call_soon_threadsafe(_start, stopping, then)
        return
    try:
        if not loop.is_running():
            stopping.close()  # nothing can run it: the engine went with its loop
            return
        future = asyncio.run_coroutine_threadsafe(stopping, loop)
        try:
            future.result(timeout + STOP_MARGIN)
        except concurrent.futures.TimeoutError:
            future.cancel()
    finally:
        then()


def _start(stopping: Coroutine[Any, Any, None], then: Callable[[], None]) -> None:
    task = asyncio.get_running_loop().create_task(_stop_then(stopping, then))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _stop_then(stopping: Coroutine[Any, Any, None], then: Callable[[], None]) -> None:
    # What ``then`` raises (SystemExit, KeyboardInterrupt) leaves the loop, as the
    # signal would have left it: asyncio.run() then cancels the other tasks.
    try:
        await stopping
    finally:
        then()


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise NotMainThreadError(
            f"{what} must be called from the main thread: Python runs signal handlers there only"
        )


def _check_signals(signals: Iterable[int]) -> list[int]:
    try:
        # Each once: a signal listed twice would find this handler as its previous one.
        wanted = list(dict.fromkeys(signals))
    except TypeError:
        raise ValidationError("signals must be an iterable of signal numbers") from None
    if not wanted or not all(isinstance(s, int) and not isinstance(s, bool) for s in wanted):
        raise ValidationError(f"signals must be one or more signal numbers, got {wanted!r}")
    return wanted


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValidationError("timeout must be a number of seconds")
    if not math.isfinite(timeout) or timeout < 0:
        raise ValidationError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    return float(timeout)
