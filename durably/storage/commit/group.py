"""Group commit: the write batches that threads of one process send at the same time share a transaction.

The design and its rules are in :mod:`durably.storage.commit`. A thread that
finds no commit in progress leads: it passes the gate, commits its batch with
every batch queued meanwhile as one transaction, hands each waiting thread
the outcomes of its own statements, and passes the lead on.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from ...errors import DatabaseError

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

    ``gate`` is entered by each leader before it commits and left once the
    group is committed: for :class:`~durably.database.Database`, its write
    lock and this process's turn at the file.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[S]], list[R]],
        retry_alone: Callable[[Exception], bool],
        gate: AbstractContextManager[object] | None = None,
    ) -> None:
        self._commit = commit
        self._retry_alone = retry_alone
        self._gate = gate if gate is not None else contextlib.nullcontext()
        self._lock = threading.Lock()
        self._queue: list[_Pending[S, R]] = []
        """Batches no leader has taken yet, in order; a new leader's own batch is first."""
        self._leading = False
        """A thread is committing, or is about to: new batches wait for it. Whenever
        this is False the queue is empty."""

    def submit(self, statements: Sequence[S]) -> list[R]:
        """Commit ``statements`` (with whatever else is queued); their outcomes, in order."""
        # (Annotated, not subscripted: calling _Pending[S, R] costs typing's machinery.)
        mine: _Pending[S, R] = _Pending(statements)
        if not self._enqueue([mine]):
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
        group: list[_Pending[S, R]] = [_Pending(statements) for statements in batches]
        # Queued together, the batches are taken together by one leader: this
        # thread, at once or when the lead passes to the first of them.
        first = group[0]
        if not self._enqueue(group):
            first.wait()
        if first.leads:
            self._lead(first)
        for pending in group[1:]:
            pending.wait()  # the leader took the whole queue, these with it
        return [
            pending.error if isinstance(pending.error, Exception) else pending.result()
            for pending in group
        ]

    def _enqueue(self, batches: list[_Pending[S, R]]) -> bool:
        """Queue ``batches``; True if the first of them leads at once (no commit under way)."""
        with self._lock:
            self._queue.extend(batches)
            if self._leading:
                return False
            self._leading = batches[0].leads = True
            return True

    def _lead(self, mine: _Pending[S, R]) -> None:
        """Pass the gate, then commit the queued batches (``mine`` first) as one transaction.

        The leader takes the batches queued when it starts, and those that
        join while it waits at the gate: while this process waits for its
        turn at the file, its other threads' batches share this transaction
        instead of each waiting for a turn of its own. If the gate raises,
        the batches taken before the wait fail with its error; later ones
        wait for the next leader.
        """
        with self._lock:
            group, self._queue = self._queue, []
        try:
            with self._gate:
                with self._lock:
                    group += self._queue
                    self._queue = []
                self._commit_group(group)
        except Exception as exc:  # from the gate: _commit_group keeps its errors
            for pending in group:
                if pending.outcomes is None and pending.error is None:
                    pending.error = exc if pending is mine else copy_error(exc)
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
