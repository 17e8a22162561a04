"""``LISTEN/NOTIFY``: new work wakes idle workers of every process at once, on PostgreSQL.

A process's own workers are woken by the call that committed the work
(:meth:`durably.engines.runtime.Runtime.wake_workers`); workers of other
processes would only see it at their next poll. On PostgreSQL the same call
also sends ``NOTIFY`` on :data:`CHANNEL` once the work is committed, and
each process with a worker running keeps one connection of its own
listening there (:class:`Listener`), which wakes that process's workers.

The payload names the sending ``Durably`` (a random token of its
:class:`Notifications`), so a process does not wake itself twice. ``NOTIFY``
is sent from a thread of its own (:class:`Announcer`): the call that
committed the work, an event loop's included, never waits for it, and work
committed while one is on its way goes out with the next one.
A notification is only a hint: a worker that misses one (its connection
dropped meanwhile) still finds the run at its next poll.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .postgresql import PostgresDatabase

CHANNEL = "durably_work"
"""The channel durably's notifications travel on."""
POLL_SECONDS = 0.25
"""How long the listener waits for a notification before it looks whether to stop: the
longest a ``close()`` waits for it."""
RECONNECT_SECONDS = 1.0
"""The pause before a listener whose connection failed connects again."""

log = logging.getLogger("durably.worker")


class Announcer:
    """Sends ``NOTIFY`` from a thread of its own, so the caller never waits (an event loop
    least of all): the work announced while one is being sent goes out as one more."""

    def __init__(self, db: PostgresDatabase, token: str) -> None:
        self._db = db
        self._due = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._notify = sa.select(sa.func.pg_notify(CHANNEL, token))

    def announce(self) -> None:
        """Tell the other processes' workers that work was committed (best effort)."""
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send, name="durably-notify", daemon=True
                )
                self._thread.start()
        self._due.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._due.set()
        if thread is not None:
            thread.join(5)

    def _send(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._closed:
                return
            try:
                # In autocommit: one round trip, where a transaction would add BEGIN and COMMIT.
                with self._db.engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT").execute(self._notify)
            except sa.exc.SQLAlchemyError as exc:
                # Only a hint: the other workers still poll.
                log.debug("durably: NOTIFY failed: %s", exc)


class Listener:
    """A thread that wakes this process's workers when another process announces work."""

    def __init__(self, db: PostgresDatabase, wake: Callable[[], None], token: str) -> None:
        self._db = db
        self._wake = wake
        self.token = token
        """This process's name in the notifications it sends (its own are not for it)."""
        self._running: tuple[threading.Thread, threading.Event] | None = None
        """The listening thread and what stops it (each thread has its own: a worker
        started again at once does not wait for the last one's thread to end)."""
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._running is not None:
                return
            stopping = threading.Event()
            thread = threading.Thread(
                target=self._listen, args=(stopping,), name="durably-listen", daemon=True
            )
            self._running = (thread, stopping)
            thread.start()

    def stop(self, *, wait: bool = False) -> None:
        """Stop listening; with ``wait``, until its connection is closed."""
        with self._lock:
            running, self._running = self._running, None
        if running is None:
            return
        thread, stopping = running
        stopping.set()
        if wait:
            thread.join(POLL_SECONDS * 4 + 1)

    def _listen(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self._listen_on(self._connect(), stopping)
            except Exception as exc:  # a dropped connection: connect again
                log.debug("durably: LISTEN connection lost: %s", exc)
                stopping.wait(RECONNECT_SECONDS)

    def _connect(self) -> Any:
        """A driver connection of its own, in autocommit mode, that the pool never sees."""
        engine = self._db.engine
        args, options = engine.dialect.create_connect_args(engine.url)
        connection = engine.dialect.loaded_dbapi.connect(*args, **options)
        connection.autocommit = True
        return connection

    def _listen_on(self, connection: Any, stopping: threading.Event) -> None:
        with contextlib.closing(connection):
            connection.execute(f"LISTEN {CHANNEL}")
            # Work announced while this process was not listening is found by
            # the poll; a wake now costs one claim and catches it at once.
            self._wake()
            while not stopping.is_set():
                for notify in connection.notifies(timeout=POLL_SECONDS):
                    if notify.payload != self.token:
                        self._wake()


class Notifications:
    """A ``Durably``'s two ends of the channel: it listens while it has a worker running, and
    announces the work it commits."""

    def __init__(self, db: PostgresDatabase, wake_local: Callable[[], None]) -> None:
        token = secrets.token_hex(8)
        self._listener = Listener(db, wake_local, token)
        self._announcer = Announcer(db, token)

    def listen(self) -> None:
        self._listener.start()

    def stop_listening(self) -> None:
        self._listener.stop()

    def announce(self) -> None:
        self._announcer.announce()

    def close(self) -> None:
        self._listener.stop(wait=True)
        self._announcer.close()
