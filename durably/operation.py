"""Operations written once, run from a thread or from an event loop.

Most of what a worker writes is known before it is written: a claim, a
step's result, a run's completion. An *operation* is a generator that
yields the I/O it needs (a :class:`Write` of prebuilt statements, or a
blocking :class:`Call`: a read, a write that must look at what it reads)
and is sent back the outcome, or has the error thrown in where it yielded.
What it returns is its result.

:func:`run` does the I/O in the calling thread: the thread engine, ``def``
jobs, the sync API. :func:`run_async` does it without blocking the event
loop: a call goes to one of the runtime's database threads, and a write
joins the writes the loop's other tasks make at the same moment
(:mod:`durably.loop_commit`), so that they travel to a database thread
together, as one transaction.

The decisions around a write (was it fenced out? was the run cancelled
meanwhile? which event follows?) are made in the operation, once, whichever
engine runs it; only the way to the database differs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .database import Batch, Database

if TYPE_CHECKING:
    from .runtime import Runtime

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Write:
    """Commit these statements as one batch; the operation is sent their ``Outcome`` list."""

    batch: Batch


@dataclass(frozen=True, slots=True)
class Call:
    """Call this blocking function; the operation is sent what it returns."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


Operation = Generator[Write | Call, Any, T]
"""A generator that yields :class:`Write` and :class:`Call` requests and returns ``T``."""


def run(operation: Operation[T], db: Database) -> T:
    """Run ``operation`` to its end, doing its I/O in this thread.

    Spelled out rather than built on :class:`_Step`: the thread engine runs
    an operation for every write it makes.
    """
    try:
        request = operation.send(None)
        while True:
            try:
                if isinstance(request, Write):
                    reply = db.write_batch(request.batch)
                else:
                    reply = request.fn(*request.args)
            except Exception as exc:
                request = operation.throw(exc)
            else:
                request = operation.send(reply)
    except StopIteration as stop:  # the operation returned (PEP 479: it cannot raise one)
        result: T = stop.value
        return result


async def run_async(operation: Operation[T], runtime: Runtime) -> T:
    """Run ``operation`` to its end from the event loop, its I/O in database threads."""
    with closing(operation):
        step = _Step(operation)
        while (request := step.request) is not None:
            try:
                if isinstance(request, Write):
                    reply = await runtime.loop_commit.write(request.batch)
                else:
                    reply = await runtime.call(request.fn, *request.args)
            except Exception as exc:
                step.throw(exc)
            else:
                step.send(reply)
        return step.result


class _Step(Generic[T]):
    """Where an operation stands: the request it is waiting on, or its result.

    An error the operation raises (rather than one thrown in and caught)
    goes on up to the driver's caller.
    """

    def __init__(self, operation: Operation[T]) -> None:
        self._operation = operation
        self.request: Write | Call | None = None
        self.result: T
        self._resume(operation.send, None)

    def send(self, reply: Any) -> None:
        self._resume(self._operation.send, reply)

    def throw(self, error: Exception) -> None:
        self._resume(self._operation.throw, error)

    def _resume(self, how: Callable[[Any], Write | Call], value: Any) -> None:
        try:
            self.request = how(value)
        except StopIteration as stop:
            self.request = None
            self.result = stop.value
