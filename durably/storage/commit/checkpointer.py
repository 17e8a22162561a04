"""Copying the write-ahead log into the database file on a thread of its own, off the writers' path.

In WAL mode at ``synchronous = NORMAL`` a commit only appends to the log;
each byte of the log is synced once, later, when a checkpoint copies the
log back into the database file. SQLite runs that checkpoint inside the
commit that takes the log past ``wal_autocheckpoint`` pages: that commit
syncs the whole log, several megabytes, and then the file, and the trigger
or step that made it waits tens of milliseconds for everyone's syncs.

So a durably process checkpoints on a thread of its own soon after it
writes: ``PRAGMA wal_checkpoint(PASSIVE)``, which waits for no reader or
writer (writers go on appending meanwhile) and never calls the busy
handler. By the time a commit crosses the mark, little of the log is left
unsynced, and the checkpoint SQLite runs there is short. That one still
matters: a checkpoint racing writers hardly ever catches up with the end
of the log, and SQLite only starts the log over from its beginning once
one has, so without it the log file would grow without end.

Only for the stdlib ``sqlite3`` driver at ``synchronous`` OFF or NORMAL
(:class:`~durably.database.Database` decides). At FULL every commit syncs
the log already, and checkpoints on a thread only add syncs of the file
that compete with the commits'. libSQL's
driver holds the GIL while SQLite works, so there a checkpoint stops every
thread of the process wherever it runs. A remote server checkpoints its own
files. Those keep SQLite's own placement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_PAUSE = 0.02
"""Seconds between two checkpoints while writes keep coming.

Each checkpoint syncs the log and the file, so this bounds that work under
a steady stream of writes; a much longer pause leaves each checkpoint more
of the log to sync (docs/contributing/performance-history.md has the
measurements behind the figure).
"""


class Checkpointer:
    """Checkpoints on a daemon thread after writes, at most every :data:`CHECKPOINT_PAUSE`.

    :meth:`nudge` is called after every commit and costs a flag check when
    a checkpoint is already due; the thread starts with the first nudge and
    sleeps while nothing is written. It checkpoints on a driver connection
    of its own, from ``connect``, not one of the pool's: it takes no
    connection your code might be waiting for, and your pool's ``checkout``
    events do not see it. A checkpoint is best effort: an error is logged,
    the connection dropped, and the next nudge tries again on a new one (the
    commit that crosses the mark still checkpoints, as SQLite always does).
    """

    def __init__(self, connect: Callable[[], Any], pause: float = CHECKPOINT_PAUSE) -> None:
        self._connect = connect
        self._pause = pause
        self._lock = threading.Lock()
        """Guards starting and stopping the thread."""
        self._due = threading.Event()
        """Set by a commit since the last checkpoint began."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _instances.add(self)

    def nudge(self) -> None:
        """Something was committed: checkpoint soon."""
        if self._due.is_set():
            return
        if self._thread is None:
            self._start()
        self._due.set()

    def close(self) -> None:
        """Stop the thread, after the checkpoint under way (if any) ends."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        self._due.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run,
                args=(self._due, self._stop),
                name="durably-checkpoint",
                daemon=True,
            )
            self._thread.start()

    def _run(self, due: threading.Event, stop: threading.Event) -> None:
        connection = None
        try:
            while True:
                due.wait()
                if stop.is_set():
                    return
                due.clear()
                try:
                    if connection is None:
                        connection = self._connect()
                    checkpoint_passive(connection)
                except Exception:
                    logger.warning("durably: background WAL checkpoint failed", exc_info=True)
                    _close(connection)
                    connection = None
                # Commits made during the checkpoint or the pause set `due` again.
                if stop.wait(self._pause):
                    return
        finally:
            _close(connection)

    def _after_fork_in_child(self) -> None:
        """A forked child has none of the parent's threads: the next nudge starts its own."""
        stopped = self._stop.is_set()
        self._thread = None
        self._due = threading.Event()
        self._stop = threading.Event()
        if stopped:
            self._stop.set()
        self._lock = threading.Lock()


def checkpoint_passive(connection: Any) -> None:
    """``PRAGMA wal_checkpoint(PASSIVE)`` on a DB-API connection."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        cursor.close()


def _close(connection: Any) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


_instances: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for checkpointer in list(_instances):
        checkpointer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
