"""Job timeouts: an attempt that outlives its job's ``timeout`` fails with ``RunTimeoutError``.

The failure is retried under the job's retry policy like any other. How the
attempt is stopped depends on what can be stopped:

* an ``async def`` job's coroutine runs in a task of its own, which is
  cancelled at the deadline (an awaiting step is cancelled with it);
* a ``def`` job cannot be interrupted: it runs in a thread of its own, and
  the worker stops waiting for it at the deadline. The function goes on in
  its thread until it returns, so the process may run more job threads than
  it has slots until it does.

Either way the worker then *fences the attempt off* before it records its
end (:func:`timed_out_op`): the run's ``lease_generation`` is incremented
under the attempt's own fence, so whatever the attempt still writes (step
results, logs, progress, its completion) matches no row, and the heartbeat
no longer renews its lease. The failure is recorded under the new
generation. Anything still awaiting in the attempt (a ``def`` step of an
``async def`` job, a step that ignores cancellation) is shut out the same way.

A job without a timeout takes none of this: no thread, no task, no write.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..core.leases import AbortReason
from ..core.operation import Operation
from ..errors import RunTimeoutError
from ..status import RunStatus
from .execution import Execution
from .outcomes import Outcome, settle_error_op

T = TypeVar("T")


class Overran(Exception):
    """The attempt was still running at its deadline (durably's signal, never a job's error)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.timeout = timeout


def call_within(timeout: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread of its own; its result, or :class:`Overran` at the deadline.

    The calling thread waits; whatever ``fn`` raises (``SystemExit``
    included) is raised here, as if it had been called here. At the
    deadline ``fn`` is left running: its thread is a daemon, its outcome dropped.
    """
    call = _ThreadCall(fn, args)
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(call.run,), name="durably-job", daemon=True
    )
    thread.start()
    if not call.done.wait(timeout):
        raise Overran(timeout)
    if call.error is not None:
        raise call.error
    result: T = call.result
    return result


class _ThreadCall:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # carried to the waiting thread
            self.error = exc
        finally:
            self.done.set()


async def await_within(timeout: float, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` in a task of its own; cancelled, and :class:`Overran`, at the deadline.

    A task of its own, because cancelling the caller's task would leave a
    cancellation pending on it when the job returns just at the deadline.
    The worker does not wait for the cancelled task to unwind: the fence
    shuts out whatever it still writes.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.add_done_callback(_drop_outcome)
        task.cancel()
        raise Overran(timeout)
    return task.result()


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    """The timed-out job's own end, retrieved so that asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


def timed_out_op(execution: Execution, timeout: float) -> Operation[Outcome]:
    """Record that the attempt outlived its timeout while its code may still be running.

    The attempt is told to stop (its next ``step.run`` raises
    ``RunTimeoutError``, ``step.cancelled`` is true), its lease is no longer
    renewed, and the fence-off shuts out its later writes. The failure is
    then settled under the next generation: retried under the job's policy,
    or the run fails. A run cancelled or lost meanwhile is left as it is.
    """
    lease, runtime = execution.lease, execution.runtime
    lease.abort(AbortReason.TIMED_OUT)
    runtime.leases.remove(lease)
    successor = yield from runtime.service.fence_off_op(lease)
    if successor is None:
        status = yield from runtime.service.run_status_op(lease.run_id)
        return "cancelled" if status == RunStatus.CANCELLED.value else "lease-lost"
    settling = Execution(runtime, dataclasses.replace(execution.claimed, lease=successor))
    settling.job = execution.job
    return (yield from settle_error_op(settling, RunTimeoutError(timeout)))
