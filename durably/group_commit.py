"""Group commit: the write batches that threads of one process send at the same time share a transaction.

Every write durably makes (a claim, a step result, a completion, a trigger)
is a small batch of statements, and the batches of a process are committed
one at a time: SQLite has one writer, and durably's writes share one
connection. Under load, threads used to queue on a lock and commit one
small transaction each, every turn a wake-up of the next thread and a
commit of its own. With four worker slots, four out of five writes found
the lock taken.

Here a thread that finds no commit in progress commits its batch at once,
alone, exactly as before. Batches that arrive meanwhile queue up without
touching the database. When a commit ends, the lead passes to the thread of
the oldest queued batch: it commits every batch queued by then as one
transaction, in queue order, hands each waiting thread the outcomes of its
own statements, and passes the lead on in turn.

Nothing a caller can observe changes: its statements are committed, in
order and atomically, before :meth:`GroupCommit.submit` returns, and it
gets the outcomes of its own statements only. Fencing lives inside each
statement (``WHERE`` the lease still holds), so one batch's refused write
does not touch the others. When the shared transaction fails, the batches
are committed again one by one, so each caller gets its own error; unless
the error says that would be wrong (the caller's ``retry_alone``): after
the lock timeout, each batch would only wait it out again, and after a
request to a remote server broke off unanswered, nobody knows whether the
transaction committed, so nothing of it may be sent again. Then every
caller of the group gets the error.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .errors import DatabaseError

S = TypeVar("S")
R = TypeVar("R")


class _Pending(Generic[S, R]):
    """One caller's batch: queued, then committed by whoever leads."""

    __slots__ = ("_woken", "error", "leads", "outcomes", "statements")

    def __init__(self, statements: Sequence[S]) -> None:
        self.statements = statements
        self.outcomes: list[R] | None = None
        self.error: BaseException | None = None
        self.leads = False
        """Set (under the queue's lock) when the lead is passed to this batch's caller."""
        self._woken = threading.Lock()
        self._woken.acquire()

    def wait(self) -> None:
        self._woken.acquire()

    def wake(self) -> None:
        self._woken.release()

    def result(self) -> list[R]:
        if self.error is not None:
            raise self.error
        assert self.outcomes is not None
        return self.outcomes


class GroupCommit(Generic[S, R]):
    """Commits concurrent batches of statements ``S`` together; each caller gets its outcomes ``R``.

    ``commit(statements)`` runs statements in one transaction (retrying a
    locked database as it sees fit) and returns one outcome per statement.
    ``retry_alone(error)`` says whether, after a shared transaction failed
    with ``error``, each batch may be committed again on its own.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[S]], list[R]],
        retry_alone: Callable[[Exception], bool],
    ) -> None:
        self._commit = commit
        self._retry_alone = retry_alone
        self._lock = threading.Lock()
        self._queue: list[_Pending[S, R]] = []
        self._leading = False
        """A thread is committing, or is about to: new batches wait for it. Whenever
        this is False the queue is empty."""

    def submit(self, statements: Sequence[S]) -> list[R]:
        """Commit ``statements`` (with whatever else is queued); their outcomes, in order."""
        mine: _Pending[S, R] | None = None
        with self._lock:
            if self._leading:
                mine = _Pending(statements)
                self._queue.append(mine)
            else:
                self._leading = True  # and the queue is empty: this batch goes alone
        if mine is None:
            try:
                return self._commit(statements)
            finally:
                self._pass_lead()
        try:
            mine.wait()
        except BaseException:  # interrupted while queued (KeyboardInterrupt)
            self._withdraw(mine)
            raise
        if mine.leads:
            self._lead(mine)
        return mine.result()

    def submit_all(self, batches: Sequence[Sequence[S]]) -> list[list[R] | Exception]:
        """Commit several callers' batches as if each had called :meth:`submit` at once.

        For the event loop's half of group commit (:mod:`durably.loop_commit`),
        which collects the batches of many tasks and hands them over together
        from one thread. Each batch gets its own outcomes, or its own error, as
        it would from ``submit``: they are returned, not raised.
        """
        group = [_Pending[S, R](statements) for statements in batches]
        with self._lock:
            queued = self._leading
            if queued:
                self._queue.extend(group)
            else:
                self._leading = True
        if not queued:
            try:
                self._commit_group(group)
            finally:
                self._pass_lead()
        else:
            # Queued together, the batches are taken together by one leader:
            # this thread, when the lead passes to the first of them.
            first = group[0]
            first.wait()
            if first.leads:
                self._lead(first)
            for pending in group[1:]:
                pending.wait()
        return [
            pending.error if isinstance(pending.error, Exception) else pending.result()
            for pending in group
        ]

    def _lead(self, mine: _Pending[S, R]) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            self._commit_group(group)
        finally:
            for pending in group:
                if pending is mine:
                    continue
                if pending.outcomes is None and pending.error is None:
                    pending.error = DatabaseError(
                        "The thread committing this write was interrupted before it knew "
                        "whether the write was committed"
                    )
                pending.wake()
            self._pass_lead()

    def _commit_group(self, group: list[_Pending[S, R]]) -> None:
        if len(group) > 1:
            try:
                outcomes = self._commit([s for pending in group for s in pending.statements])
            except Exception as exc:
                if not self._retry_alone(exc):
                    for pending in group:
                        pending.error = copy_error(exc)
                    return
                # Most likely one batch's fault: commit each alone, for its own error.
            else:
                start = 0
                for pending in group:
                    end = start + len(pending.statements)
                    pending.outcomes = outcomes[start:end]
                    start = end
                return
        for pending in group:
            try:
                pending.outcomes = self._commit(pending.statements)
            except Exception as exc:
                pending.error = exc

    def _pass_lead(self) -> None:
        with self._lock:
            if not self._queue:
                self._leading = False
                return
            successor = self._queue[0]
            successor.leads = True
        successor.wake()

    def _withdraw(self, mine: _Pending[S, R]) -> None:
        """Take an interrupted caller's batch out of the queue; pass the lead on if it had it.

        A batch a leader has already taken is committed (or not) all the
        same: the caller was interrupted mid-write, as it could be before.
        """
        with self._lock:
            if mine not in self._queue:
                return
            self._queue.remove(mine)
            if not mine.leads:
                return
        self._pass_lead()


def copy_error(error: Exception) -> Exception:
    """The same error for another thread to raise: one exception object per traceback."""
    try:
        duplicate = copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        return error
    duplicate.__cause__ = error.__cause__
    return duplicate
