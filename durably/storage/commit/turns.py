"""Taking turns at writing a local database file with durably's other processes.

SQLite keeps no queue for its write lock. A writer that finds it taken gets
``SQLITE_BUSY`` and has to try again later, and however it waits (SQLite's
own busy handler sleeps 1, 2, 5, 10 ms and on; durably's retry sleeps
from 0.2 ms, doubling) the lock is often free while every waiter sleeps.
Four worker processes on one file (gunicorn's workers each running a
durably worker, say) drained runs more slowly than one process did.

So durably's processes first take turns on a lock file beside the database,
``<database>-durably.lock``, with ``flock``. A process waiting for its turn
sleeps in the kernel and is woken the moment the holder lets go, and its
transaction then finds SQLite's lock free, unless a writer that is not
durably's holds it, which the retry in the retry policy of :class:`~durably.storage.database.Database` still
waits out. Turns are only a courtesy between durably's processes: SQLite's
lock is still what keeps writes apart, and where the lock file cannot be had
(Windows, a directory durably may not write, a remote database) writes go on
without turns, as before.

A process waits for its turn for :data:`TURN_PATIENCE` at most (or its
``lock_timeout``, if shorter), and then writes without one. Linux has no
``flock`` with a timeout, so a contended wait happens on a helper thread, and
the writer waits for that thread with one; a turn that arrives after the
writer gave up is handed straight back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: writers go on without turns
    fcntl = None  # type: ignore[assignment]

LOCK_FILE_SUFFIX = "-durably.lock"

TURN_PATIENCE = 0.5
"""Seconds a writer waits for its turn before it writes without one.

A turn comes within a millisecond or so, even with four busy processes on
one file. One that has not come in half a second is held by a process that
is stopped (SIGSTOP, a debugger, a frozen container) or stuck, and it must
not hold up the others' writes: SQLite's lock, not the turn, keeps writes
apart, so the writer goes on and meets that lock as durably's writes did
before turns. Until the holder lets go, this process does not wait for it
again (see :meth:`WriteTurns.acquire`).
"""


def lock_file_for(database: str | None) -> Path | None:
    """The lock file of a local database path (as in its URL), or None if it has none.

    ``file:`` URIs name their path before any ``?``.
    """
    if not database or fcntl is None:
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database + LOCK_FILE_SUFFIX)


class _Request:
    """One contended wait, shared by the writer and the helper thread that blocks for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._granted = False
        self._abandoned = False
        self.arrived = threading.Event()
        self.settled = threading.Event()
        """Set once the helper is done with it: the turn given, or handed back."""

    def grant(self) -> bool:
        """The helper got the turn: False if the writer gave up already (hand it back)."""
        with self._lock:
            if self._abandoned:
                return False
            self._granted = True
        self.arrived.set()
        return True

    def give_up(self) -> bool:
        """The writer stops waiting: True if the turn arrived meanwhile (it holds it)."""
        with self._lock:
            self._abandoned = not self._granted
            return self._granted

    @property
    def abandoned(self) -> bool:
        """The writer gave up on it before it came."""
        with self._lock:
            return self._abandoned


class WriteTurns:
    """This process's place in the queue of durably processes writing one local file.

    :meth:`acquire` and :meth:`release` are called under the
    ``Database``'s own write lock, so one thread of the process at a time
    takes a turn.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._held = False
        self._waiter: _Waiter | None = None
        self._last_request: _Request | None = None

    def acquire(self, deadline: float) -> bool:
        """Take the turn; False if it did not come in time, and the caller writes without it.

        It waits until ``deadline`` (``time.monotonic()``) or for
        :data:`TURN_PATIENCE`, whichever ends first. While the helper still
        waits for a turn given up that way, the holder has kept it for that
        long: this returns False at once, until the holder lets go. Without a
        lock file (see the module docstring) every call succeeds at once.
        """
        fd = self._open()
        if fd is None:
            return True
        last = self._last_request
        if last is not None and not last.settled.is_set() and last.abandoned:
            return False
        if last is None or last.settled.is_set():
            # (While the helper still waits for a turn given up, it may get
            # it at any moment on this same open file, where flock would then
            # tell this thread it has the turn too: queue behind it instead.)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            except OSError:  # a file system without flock: no turns
                return True
            else:
                self._held = True
                return True
        if self._waiter is None:
            self._waiter = _Waiter(fd)
        request = self._last_request = _Request()
        self._waiter.requests.put(request)
        patience = min(deadline - time.monotonic(), TURN_PATIENCE)
        arrived = request.arrived.wait(max(0.0, patience))
        if not arrived and not request.give_up():
            return False
        self._held = True
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            assert self._fd is not None
            with contextlib.suppress(OSError):  # nothing held, as after a failed flock
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Let go of the lock file (a later :meth:`acquire` opens it again)."""
        self.release()
        fd, self._fd = self._fd, None
        waiter, self._waiter = self._waiter, None
        self._last_request = None
        if waiter is not None:
            waiter.requests.put(None)  # it closes the file once no wait is under way
        elif fd is not None:
            os.close(fd)

    def _open(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is not None and self._pid != os.getpid():
            # A forked child shares the parent's open file, and with it the
            # parent's turns: it needs one of its own. Closing its copy leaves
            # the parent's turn alone (unlocking it would not).
            os.close(self._fd)
            self._fd, self._waiter, self._last_request, self._held = None, None, None, False
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                try:  # flock needs no write access: another user's file will do
                    self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None  # no turns here this time; the next write tries again
            self._pid = os.getpid()
        return self._fd


class _Waiter:
    """A daemon thread that blocks in ``flock`` for the writer, which may give up first."""

    def __init__(self, fd: int) -> None:
        self.requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._fd = fd
        thread = threading.Thread(target=self._run, name="durably-write-turns", daemon=True)
        thread.start()

    def _run(self) -> None:
        while (request := self.requests.get()) is not None:
            # (On a file system without flock, the writer goes on without a turn.)
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            if not request.grant():
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            request.settled.set()
        os.close(self._fd)
