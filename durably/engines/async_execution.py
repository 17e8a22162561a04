"""Driving an ``async def`` job's run from the event loop.

Its coroutine steps are awaited on the loop and cancelled as soon as the run
is told to stop; its ``def`` steps run whole in a step thread (one thread
hop per step: the function and its fenced write). Every other write goes
through the async driver (:func:`durably.core.operation.run_async`), so it
travels with the writes of the loop's other runs. ``step.progress()`` and
``step.log`` never block the loop: their writes are queued, in order, and
stored before the next step result and the run's outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..bridge import Threads, run_in, running_loop, wait_event
from ..core import operation
from ..core.leases import ClaimedRun
from ..core.operation import Operation
from ..errors import CancelledError, DurablyError, LeaseLostError
from ..retry import Retry
from .execution import Execution
from .step_calls import StepCall, traced_step

if TYPE_CHECKING:
    from .runtime import Runtime


class AsyncExecution(Execution):
    """The state of one ``async def`` job's run, and its steps, awaited on the loop."""

    def __init__(
        self, runtime: Runtime, claimed: ClaimedRun, *, step_threads: Threads | None = None
    ) -> None:
        super().__init__(runtime, claimed)
        self.step_threads = step_threads
        """Where the job's ``def`` steps run (None: the loop's default executor)."""
        self._writes: _WriteQueue | None = None
        self._abort_event: asyncio.Event | None = None
        self._step_waiters: set[asyncio.Future[None]] = set()
        """What the awaiting tasks wait on while async steps run (``_await_step``): several
        at once when the job awaits steps concurrently (``asyncio.gather``)."""

    def call_step(self, attempt: StepCall, fn: Callable[[], Any]) -> Any:
        """A ``def`` step in a step thread; a result that is awaitable comes back unrecorded."""
        db = self.runtime.db
        try:
            result = fn()
        except Exception as exc:
            error = operation.run(self.step_raised_op(attempt, exc), db)
            if error is exc:
                raise
            raise error from exc
        if inspect.isawaitable(result):
            return _Awaitable(result)
        return operation.run(self.step_returned_op(attempt, result), db)

    async def run_step_async(
        self, name: str, fn: Callable[[], Any], retry: Retry | None = None
    ) -> Any:
        """Run a step: a coroutine function on the loop, a ``def`` function in a thread."""
        if self.lease.expired_locally:
            await operation.run_async(self.confirm_lease_op(), self.runtime.async_db)
        attempt = self.begin_step(name, retry)
        if attempt.replayed:
            return attempt.output
        if self.runtime.instrumentation is not None:
            fn = traced_step(self.runtime.instrumentation, self.claimed, attempt, fn)
        if inspect.iscoroutinefunction(fn):
            awaitable: Awaitable[Any] = fn()
        else:
            # Progress and logs reported before this step are stored before its result.
            await self.flush()
            ran = await run_in(self.step_threads, self.call_step, attempt, fn)
            if not isinstance(ran, _Awaitable):
                return ran
            awaitable = ran.awaitable
        storage = self.runtime.async_db
        try:
            result = await self._await_step(attempt, awaitable)
        except (CancelledError, LeaseLostError):
            await operation.run_async(self.cut_off_op(attempt), storage)
            raise
        except Exception as exc:
            await self.flush()
            error = await operation.run_async(self.step_raised_op(attempt, exc), storage)
            if error is exc:
                raise
            raise error from exc
        await self.flush()
        return await operation.run_async(self.step_returned_op(attempt, result), storage)

    async def _await_step(self, attempt: StepCall, awaitable: Awaitable[Any]) -> Any:
        """Await a step's coroutine on the loop; cancel it once the run is told to stop.

        This task waits on one future that either the step's end or the
        abort resolves: no second task and no ``asyncio.wait`` per step.
        """
        aborted = self._aborted()
        task = asyncio.ensure_future(awaitable)
        waiter = task.get_loop().create_future()
        self._step_waiters.add(waiter)
        task.add_done_callback(functools.partial(_wake, waiter))
        try:
            if not aborted.is_set():
                await waiter
            if not task.done():  # told to stop
                task.cancel()
                await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: moot once the run stops
                raise await operation.run_async(self.interrupted_op(attempt), self.runtime.async_db)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._step_waiters.discard(waiter)
        return task.result()

    def _aborted(self) -> asyncio.Event:
        """An event set (on this loop) when the lease is aborted from any thread.

        The abort also wakes the steps being awaited, if any (``_await_step``).
        """
        if self._abort_event is None:
            event = self._abort_event = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_loop() -> None:
                event.set()
                for waiter in list(self._step_waiters):
                    _wake(waiter)

            def from_any_thread() -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(on_loop)

            self.lease.on_abort(from_any_thread)
        return self._abort_event

    async def wait_async(self, seconds: float) -> bool:
        await wait_event(self._aborted(), seconds)
        return self.should_stop()

    def store(self, context: str, write: Operation[Any]) -> None:
        """Queue a progress/log write; from a ``def`` step's thread, write it at once."""
        if running_loop() is None:
            super().store(context, write)
            return
        if self._writes is None:
            self._writes = _WriteQueue(self)
        self._writes.submit(context, write)

    async def flush(self) -> None:
        """Wait until queued progress/log writes are stored."""
        if self._writes is not None:
            await self._writes.flush()

    async def store_async(self, context: str, write: Operation[Any]) -> None:
        try:
            await operation.run_async(write, self.runtime.async_db)
        except DurablyError as exc:
            self.worker_error(exc, context)


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True)
class _Awaitable:
    """What a ``def`` step function of an async job returned when it was awaitable."""

    awaitable: Awaitable[Any]


class _WriteQueue:
    """An async job's progress and log writes, stored in order by one task at a time."""

    def __init__(self, execution: AsyncExecution) -> None:
        self._execution = execution
        self._pending: collections.deque[tuple[str, Operation[Any]]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, context: str, write: Operation[Any]) -> None:
        self._pending.append((context, write))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            await self._execution.store_async(*self._pending.popleft())

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
