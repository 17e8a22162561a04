"""The ``step`` object a job receives: durable steps, progress, logs, cancellation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar, overload

from .core.leases import Lease
from .retry import Retry
from .status import LogLevel
from .waits import Wait, WaitResult

T = TypeVar("T")


class Execution(Protocol):
    """What a step context asks of the run it belongs to (:mod:`durably.engines.execution`)."""

    lease: Lease

    def progress(self, current: float, total: float | None, message: str | None) -> None: ...

    def log(self, level: LogLevel, message: str, data: Any) -> None: ...

    def should_stop(self) -> bool: ...

    def check_abort(self) -> None: ...

    def run_step(self, name: str, fn: Callable[[], Any], retry: Retry | None = None) -> Any: ...

    def wait(self, seconds: float) -> bool: ...


class AsyncExecution(Execution, Protocol):
    """What an async step context asks of its run (:mod:`durably.engines.async_execution`)."""

    async def run_step_async(
        self, name: str, fn: Callable[[], Any], retry: Retry | None = None
    ) -> Any: ...

    async def wait_async(self, seconds: float) -> bool: ...


class Waits(Protocol):
    """What a step context asks of its run's durable waits (:mod:`durably.engines.waiting`)."""

    def prepare_wait(self, name: str, timeout: float | timedelta | None, metadata: Any) -> Wait: ...

    def wait_for(self, wait: Wait) -> WaitResult: ...

    def sleep(self, name: str, duration: float | timedelta) -> None: ...

    async def prepare_wait_async(
        self, name: str, timeout: float | timedelta | None, metadata: Any
    ) -> Wait: ...

    async def wait_for_async(self, wait: Wait) -> WaitResult: ...

    async def sleep_async(self, name: str, duration: float | timedelta) -> None: ...


class StepLogger:
    """``step.log.info/warn/error(message, data)``: persisted with the run and emitted."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution

    def info(self, message: str, data: Any = None) -> None:
        self._execution.log(LogLevel.INFO, message, data)

    def warn(self, message: str, data: Any = None) -> None:
        self._execution.log(LogLevel.WARN, message, data)

    warning = warn

    def error(self, message: str, data: Any = None) -> None:
        self._execution.log(LogLevel.ERROR, message, data)


class _BaseStepContext:
    """What both kinds of step context share: identity, progress, logs, cancellation."""

    def __init__(self, execution: Execution, waits: Waits) -> None:
        self._execution = execution
        self._waits = waits
        self.log = StepLogger(execution)

    @property
    def run_id(self) -> str:
        return self._execution.lease.run_id

    @property
    def job_name(self) -> str:
        return self._execution.lease.job_name

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._execution.lease.labels)

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record how far the run has got; visible on ``Run.progress`` and as ``run:progress``."""
        self._execution.progress(current, total, message)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled, this worker lost its lease or the attempt its
        timeout: stop soon."""
        return self._execution.should_stop()

    def raise_if_cancelled(self) -> None:
        """Raise ``CancelledError``/``LeaseLostError``/``RunTimeoutError`` if the run must stop now."""
        self._execution.check_abort()


class StepContext(_BaseStepContext):
    """Passed to every ``def`` job as its first argument.

    ``step.run(name, fn)`` is the durable unit: the first time a run reaches
    it, ``fn()`` is called and its JSON-encoded result stored; when the run is
    replayed after a crash, the stored result is returned and ``fn`` is not
    called. Step names must be unique within a job.
    """

    def run(self, name: str, fn: Callable[[], T], *, retry: Retry | None = None) -> T:
        """Run ``fn`` once per run and return its result, replayed from storage thereafter.

        The value returned is ``fn()``'s result as stored and decoded
        (:mod:`durably.values`): equal to it and of the same type, the same on
        the first run and on replay.
        With ``retry``, a failure of this step is retried under that policy
        (see :class:`~durably.Retry`) rather than the job's.
        """
        return self._execution.run_step(name, fn, retry)  # type: ignore[no-any-return]

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` in this worker, waking early on cancel; True if cancelled.

        Not durable: the run keeps its lease and its worker slot, and a run
        resumed after a crash sleeps again. Use :meth:`sleep` to wait long.
        """
        return self._execution.wait(seconds)

    def sleep(self, name: str, duration: float | timedelta) -> None:
        """Wait ``duration`` (seconds or a ``timedelta``) durably, giving up the worker meanwhile.

        The run becomes ``waiting`` with no lease and no slot, and is taken up
        again when the time comes, at the time fixed by the first call of this
        ``name``, whatever crashes or restarts happen meanwhile. The job is
        replayed up to here: code before this line runs again (steps do not).
        """
        self._waits.sleep(name, duration)

    def prepare_wait(
        self, name: str, *, timeout: float | timedelta | None = None, metadata: Any = None
    ) -> Wait:
        """Store a wait for an outside event before starting what will signal it.

        ``wait.id`` is the address for ``durably.signal(wait.id, payload)``. A
        signal that comes before :meth:`wait_for` is kept. The first call of a
        ``name`` fixes the deadline (now + ``timeout``, by the database's
        clock); a replay returns the same wait, whatever it passes.
        """
        return self._waits.prepare_wait(name, timeout, metadata)

    def wait_for(self, wait: Wait) -> WaitResult:
        """The wait's result: ``WaitResult("signal", payload)`` or ``WaitResult("timeout")``.

        Without a result yet, the run becomes ``waiting`` (no lease, no slot)
        and is replayed up to here once the signal comes or the deadline
        passes; this call then returns the result.
        """
        return self._waits.wait_for(wait)


class AsyncStepContext(_BaseStepContext):
    """Passed to every ``async def`` job as its first argument: ``await step.run(...)``.

    ``fn`` may be an ``async def`` function (awaited on the event loop and
    cancelled if the run is cancelled while it awaits) or a plain function
    (run in a worker thread, so blocking code never stalls the loop).
    ``step.progress()`` and ``step.log`` do not block: their writes are
    queued and stored, in order, before the step's result.
    """

    def __init__(self, execution: AsyncExecution, waits: Waits) -> None:
        super().__init__(execution, waits)
        self._async_execution = execution

    @overload
    async def run(
        self, name: str, fn: Callable[[], Awaitable[T]], *, retry: Retry | None = None
    ) -> T: ...

    @overload
    async def run(self, name: str, fn: Callable[[], T], *, retry: Retry | None = None) -> T: ...

    async def run(self, name: str, fn: Callable[[], Any], *, retry: Retry | None = None) -> Any:
        """Run ``fn`` once per run and return its result, replayed from storage thereafter.

        With ``retry``, a failure of this step is retried under that policy.
        """
        return await self._async_execution.run_step_async(name, fn, retry)

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel; returns True if cancelled."""
        return await self._async_execution.wait_async(seconds)

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """Wait ``duration`` durably, giving up the worker meanwhile (see ``StepContext.sleep``)."""
        await self._waits.sleep_async(name, duration)

    async def prepare_wait(
        self, name: str, *, timeout: float | timedelta | None = None, metadata: Any = None
    ) -> Wait:
        """Store a wait before starting what will signal it (see ``StepContext.prepare_wait``).

        Awaited: storing it is a database write, which must not block the loop.
        """
        return await self._waits.prepare_wait_async(name, timeout, metadata)

    async def wait_for(self, wait: Wait) -> WaitResult:
        """The wait's result, the run waiting durably for it (see ``StepContext.wait_for``)."""
        return await self._waits.wait_for_async(wait)
