"""The ``step`` object a job receives: durable steps, progress, logs, cancellation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .status import LogLevel

if TYPE_CHECKING:
    from .execution import Execution

T = TypeVar("T")


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

    def __init__(self, execution: Execution) -> None:
        self._execution = execution
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
        """True once the run was cancelled or this worker lost its lease: stop soon."""
        return self._execution.should_stop()

    def raise_if_cancelled(self) -> None:
        """Raise ``CancelledError``/``LeaseLostError`` if the run must stop now."""
        self._execution.check_abort()


class StepContext(_BaseStepContext):
    """Passed to every ``def`` job as its first argument.

    ``step.run(name, fn)`` is the durable unit: the first time a run reaches
    it, ``fn()`` is called and its JSON-encoded result stored; when the run is
    replayed after a crash, the stored result is returned and ``fn`` is not
    called. Step names must be unique within a job.
    """

    def run(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` once per run and return its result, replayed from storage thereafter.

        The value returned is the JSON round-trip of ``fn()``'s result (a
        tuple comes back as a list), the same on the first run and on replay.
        """
        return self._execution.run_step(name, fn)  # type: ignore[no-any-return]

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel; returns True if cancelled."""
        return self._execution.lease.aborted.wait(seconds) or self._execution.should_stop()


class AsyncStepContext(_BaseStepContext):
    """Passed to every ``async def`` job as its first argument: ``await step.run(...)``.

    ``fn`` may be an ``async def`` function (awaited on the event loop and
    cancelled if the run is cancelled while it awaits) or a plain function
    (run in a worker thread, so blocking code never stalls the loop).
    ``step.progress()`` and ``step.log`` do not block: their writes are
    queued and stored, in order, before the step's result.
    """

    @overload
    async def run(self, name: str, fn: Callable[[], Awaitable[T]]) -> T: ...

    @overload
    async def run(self, name: str, fn: Callable[[], T]) -> T: ...

    async def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once per run and return its result, replayed from storage thereafter."""
        return await self._execution.run_step_async(name, fn)

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel; returns True if cancelled."""
        return await self._execution.wait_async(seconds)
