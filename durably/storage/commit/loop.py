"""Group commit's event-loop half: the writes a loop's tasks make together travel together.

A batch leaves at the end of the turn of the loop in which it was written,
with every other batch written in that turn; one written while a trip to the
database is under way waits for that trip to come back and leaves with the
others that waited (see :mod:`durably.storage.commit`). Everything here runs
on the loop's own thread, so it needs no lock; each loop has its own queue.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import TYPE_CHECKING

from ...bridge import Threads, settle_future
from ..statements import Batch, Outcome
from .group import copy_error

if TYPE_CHECKING:
    from ..choice import AnyDatabase

_Waiting = list[tuple[Batch, "asyncio.Future[list[Outcome]]"]]


class _Trips:
    """One loop's batches waiting for the next trip, and where that trip stands."""

    __slots__ = ("due", "under_way", "waiting")

    def __init__(self) -> None:
        self.waiting: _Waiting = []
        self.due = False
        """The next trip leaves at the end of this turn of the loop."""
        self.under_way = False
        """A trip is in a database thread: the next one leaves when it is back."""


class LoopCommit:
    """Writes batches for tasks of any event loop, grouping those of one loop."""

    def __init__(self, db: AnyDatabase, threads: Threads) -> None:
        self._db = db
        self._threads = threads
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Trips] = (
            weakref.WeakKeyDictionary()
        )

    def write(self, batch: Batch) -> asyncio.Future[list[Outcome]]:
        """Commit ``batch``; the future has its statements' outcomes, or the error.

        A task that stops awaiting (cancelled) does not take its batch back:
        it may already be on its way, as with a thread that is interrupted.
        """
        loop = asyncio.get_running_loop()
        trips = self._loops.get(loop)
        if trips is None:
            trips = self._loops[loop] = _Trips()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        trips.waiting.append((batch, future))
        if not trips.under_way:
            self._leave_soon(loop, trips)
        return future

    def _leave_soon(self, loop: asyncio.AbstractEventLoop, trips: _Trips) -> None:
        """Send the waiting batches once the tasks ready to run in this turn of the loop have.

        Tasks woken together (by the trip that came back with their
        outcomes) write their next batches one after the other, in this
        turn: they catch the same trip instead of the first leaving alone.
        """
        if not trips.due:
            trips.due = True
            loop.call_soon(self._send, loop, trips)

    def _send(self, loop: asyncio.AbstractEventLoop, trips: _Trips) -> None:
        trips.due = False
        group, trips.waiting = trips.waiting, []
        try:
            self._threads.submit(
                functools.partial(self._db.write_batches, [batch for batch, _ in group]),
                functools.partial(self._arrived, loop, trips, group),
            )
        except RuntimeError as exc:  # the threads are shut down: nothing was sent
            for _, future in group:
                settle_future(future, None, copy_error(exc))
            return
        trips.under_way = True

    def _arrived(
        self,
        loop: asyncio.AbstractEventLoop,
        trips: _Trips,
        group: _Waiting,
        results: list[list[Outcome] | Exception] | None,
        error: BaseException | None,
    ) -> None:
        trips.under_way = False
        if results is None:  # the call itself failed: it is every batch's error
            assert error is not None
            for _, future in group:
                settle_future(future, None, error if len(group) == 1 else _another(error))
        else:
            for (_, future), result in zip(group, results, strict=True):
                if isinstance(result, Exception):
                    settle_future(future, None, result)
                else:
                    settle_future(future, result, None)
        if trips.waiting:
            self._leave_soon(loop, trips)


def _another(error: BaseException) -> BaseException:
    """The error once more for another task: one exception object per raise."""
    return copy_error(error) if isinstance(error, Exception) else error
