"""Operations: every database operation durably makes, written once for both engines.

An *operation* is a generator that yields the I/O it needs and is sent back
the outcome (or has the error thrown in where it yielded); what it returns
is its result. It yields one of three requests:

* :class:`Write`: commit these prebuilt statements as one transaction;
* :class:`Read`: run this query function in a read transaction;
* :class:`Transaction`: run this function in a write transaction, for the
  rare write that must look at what it reads.

:func:`run` does the I/O in the calling thread (the thread engine, ``def``
jobs, the sync API). :func:`run_async` does it from an event loop, without
blocking it: the storage it is given decides how (see
:class:`durably.storage.async_database.AsyncDatabase`). The decisions around a write
(was it fenced out? was the run cancelled meanwhile? which event follows?)
are made in the operation, once, whichever engine runs it; only the way to
the database differs.

:func:`together` runs two operations side by side, so that their first
writes are committed in one transaction: a worker records the end of one
run and claims its next in the same write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..storage.statements import Batch, Outcome

T = TypeVar("T")
U = TypeVar("U")


class Storage(Protocol):
    """What the sync driver needs: :class:`durably.storage.Database`."""

    def write_batch(self, batch: Batch) -> list[Outcome]: ...

    def write_batches(self, batches: Sequence[Batch]) -> list[list[Outcome] | Exception]: ...

    def read(self, fn: Callable[..., T], *args: Any) -> T: ...

    def write(self, fn: Callable[..., T], *args: Any) -> T: ...


class AsyncStorage(Protocol):
    """What the async driver needs: :class:`durably.storage.async_database.AsyncDatabase`."""

    def write_batch(self, batch: Batch) -> Awaitable[list[Outcome]]: ...

    def write_batches(
        self, batches: Sequence[Batch]
    ) -> Awaitable[list[list[Outcome] | Exception]]: ...

    def read(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...

    def write(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True, slots=True)
class Write:
    """Commit these statements as one batch; the operation is sent their ``Outcome`` list."""

    batch: Batch

    def run(self, storage: Storage) -> list[Outcome]:
        return storage.write_batch(self.batch)

    def run_async(self, storage: AsyncStorage) -> Awaitable[list[Outcome]]:
        return storage.write_batch(self.batch)


@dataclass(frozen=True, slots=True)
class WriteEach:
    """Several operations' batches, committed together where they can be (:func:`together`).

    The operation is sent, per batch, its outcomes or its own error.
    """

    batches: Sequence[Batch]

    def run(self, storage: Storage) -> list[list[Outcome] | Exception]:
        return storage.write_batches(self.batches)

    def run_async(self, storage: AsyncStorage) -> Awaitable[list[list[Outcome] | Exception]]:
        return storage.write_batches(self.batches)


@dataclass(frozen=True, slots=True)
class Read:
    """Call ``fn(conn, *args)`` in a read transaction; the operation is sent what it returns."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self, storage: Storage) -> Any:
        return storage.read(self.fn, *self.args)

    def run_async(self, storage: AsyncStorage) -> Awaitable[Any]:
        return storage.read(self.fn, *self.args)


@dataclass(frozen=True, slots=True)
class Transaction:
    """Call ``fn(conn, *args)`` in a write transaction; the operation is sent what it returns."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self, storage: Storage) -> Any:
        return storage.write(self.fn, *self.args)

    def run_async(self, storage: AsyncStorage) -> Awaitable[Any]:
        return storage.write(self.fn, *self.args)


Request = Write | WriteEach | Read | Transaction
Operation = Generator[Request, Any, T]
"""A generator that yields requests and returns ``T``."""


def run(operation: Operation[T], storage: Storage) -> T:
    """Run ``operation`` to its end, doing its I/O in this thread."""
    try:
        request = operation.send(None)
        while True:
            try:
                reply = request.run(storage)
            except Exception as exc:
                request = operation.throw(exc)
            else:
                request = operation.send(reply)
    except StopIteration as stop:  # the operation returned (PEP 479: it cannot raise one)
        result: T = stop.value
        return result


async def run_async(operation: Operation[T], storage: AsyncStorage) -> T:
    """Run ``operation`` to its end from the event loop; ``storage`` keeps the loop free."""
    try:
        request = operation.send(None)
        while True:
            try:
                reply = await request.run_async(storage)
            except Exception as exc:
                request = operation.throw(exc)
            else:
                request = operation.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        operation.close()


def together(first: Operation[T], second: Operation[U]) -> Operation[tuple[T, U]]:
    """Run two operations; when both start with a write, those writes share a transaction.

    Each gets its own outcomes, or its own error, as if it had written
    alone; after their first requests they go on one after the other. The
    second is finished even when the first raises, then the error goes on.
    """
    first_request = _step(first)
    second_request = _step(second)
    if isinstance(first_request, Write) and isinstance(second_request, Write):
        results = yield WriteEach([first_request.batch, second_request.batch])
        first_request = _reply(first, results[0])
        second_request = _reply(second, results[1])
    try:
        first_result = yield from _finish(first, first_request)
    except Exception:
        yield from _finish(second, second_request)
        raise
    second_result = yield from _finish(second, second_request)
    return first_result, second_result


class _Done:
    """An operation that has returned, and its result."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result


def _step(
    operation: Operation[Any], reply: Any = None, error: Exception | None = None
) -> Request | _Done:
    """Send ``reply`` (or throw ``error``) into ``operation``; its next request, or its result."""
    try:
        return operation.send(reply) if error is None else operation.throw(error)
    except StopIteration as stop:
        return _Done(stop.value)


def _reply(operation: Operation[Any], outcome: list[Outcome] | Exception) -> Request | _Done:
    """Hand one batch's part of a :class:`WriteEach` to the operation that wrote it."""
    if isinstance(outcome, Exception):
        return _step(operation, error=outcome)
    return _step(operation, outcome)


def _finish(operation: Operation[T], request: Request | _Done) -> Operation[T]:
    """Drive a started operation to its end from where ``request`` left it."""
    while not isinstance(request, _Done):
        try:
            reply = yield request
        except Exception as exc:
            request = _step(operation, error=exc)
        else:
            request = _step(operation, reply)
    result: T = request.result
    return result
