"""Calling back once the caller's transaction has committed.

``job.trigger(..., connection=conn)`` writes a run inside the caller's
transaction. Other connections see the run only once the driver's
``COMMIT`` has returned, and only then may durably announce it: emit
``run:trigger``, wake its local workers, count the write so that a replica
read syncs first. SQLAlchemy Core's ``commit`` event fires just *before*
that ``COMMIT`` (Core has no after-commit event: Core code is expected to
act once ``commit()`` returns). Announcing there let a listener that looked
the run up miss it, and a ``COMMIT`` that failed (a deferred foreign key,
a full disk) left an announcement of a run that never existed.

So the hook sits one level down, on the dialect of the caller's engine:
its ``do_commit``, ``do_rollback`` and savepoint methods are wrapped, once
per dialect. Callbacks wait in the DBAPI connection's ``info`` (the
connection the caller's transaction runs on) and run after ``do_commit``
returns. ``do_rollback`` drops them, and so does the pool's reset of a
connection handed back with its transaction open, which is a rollback too.
Rolling back to a savepoint drops those registered since the savepoint
began. A connection without waiting callbacks pays one dictionary lookup
per commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

logger = logging.getLogger("durably")

_KEY = "durably.after_commit"
_WRAPPED = "_durably_after_commit"
_wrapping = threading.Lock()


class _Waiting:
    """The callbacks a connection's open transaction holds, and where its savepoints began."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.savepoints: list[tuple[str, int]] = []

    def began(self, savepoint: str) -> None:
        self.savepoints.append((savepoint, len(self.callbacks)))

    def ended(self, savepoint: str, *, rolled_back: bool) -> None:
        for depth, (name, count) in enumerate(self.savepoints):
            if name == savepoint:
                del self.savepoints[depth:]  # it, and any savepoint begun inside it
                if rolled_back:
                    del self.callbacks[count:]
                return

    def run(self) -> None:
        for callback in self.callbacks:
            try:
                callback()
            except Exception:  # the commit stands; a failed announcement must not undo it
                logger.exception("durably: a callback after the caller's commit raised")


def call_after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``connection``'s transaction has committed; never if it rolls back."""
    _wrap(connection.dialect)
    _waiting_on(connection).callbacks.append(callback)


def _wrap(dialect: sa.Dialect) -> None:
    with _wrapping:
        if getattr(dialect, _WRAPPED, False):
            return
        commit = dialect.do_commit
        rollback = dialect.do_rollback
        savepoint = dialect.do_savepoint
        rollback_to_savepoint = dialect.do_rollback_to_savepoint
        release_savepoint = dialect.do_release_savepoint

        def do_commit(dbapi_connection: Any) -> None:
            commit(dbapi_connection)
            # Taken only once COMMIT has returned. One that fails leaves the
            # transaction open in SQLite, its writes and callbacks with it:
            # the rollback that normally follows drops both.
            waiting = _take(dbapi_connection)
            if waiting is not None:
                waiting.run()

        def do_rollback(dbapi_connection: Any) -> None:
            _take(dbapi_connection)
            rollback(dbapi_connection)

        def do_savepoint(connection: Connection, name: str) -> None:
            savepoint(connection, name)
            _waiting_on(connection).began(name)

        def do_rollback_to_savepoint(connection: Connection, name: str) -> None:
            rollback_to_savepoint(connection, name)
            waiting = connection.info.get(_KEY)
            if waiting is not None:
                waiting.ended(name, rolled_back=True)

        def do_release_savepoint(connection: Connection, name: str) -> None:
            release_savepoint(connection, name)
            waiting = connection.info.get(_KEY)
            if waiting is not None:
                waiting.ended(name, rolled_back=False)

        # Instance attributes: they shadow the dialect class's methods for
        # this dialect (this engine) only.
        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
        dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]
        dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
        setattr(dialect, _WRAPPED, True)


def _waiting_on(connection: Connection) -> _Waiting:
    """What ``connection``'s open transaction holds, made on first use."""
    waiting = connection.info.get(_KEY)
    if waiting is None:
        waiting = connection.info[_KEY] = _Waiting()
    return waiting


def _take(dbapi_connection: Any) -> _Waiting | None:
    info = getattr(dbapi_connection, "info", None)  # the pool's proxy has it; a bare driver not
    return None if info is None else info.pop(_KEY, None)
