"""Embedded replicas: durably's read API served from a local copy of a remote primary.

A libSQL embedded replica is a local file that libSQL's own client keeps in
step with a remote primary: it pulls the primary's changes when asked
(``sync``) and every ``sync_interval`` seconds in a background thread of its
own. Reading it costs no round trip, but it may be behind.

So durably never *decides* anything from a replica. Only the read API
(``get_run``, ``get_runs``, ``get_steps``, ``get_logs``, ``get_queue_stats``,
``get_workers`` and the jobs' ``get_run``/``get_runs``) reads it; the claim,
the stored steps a worker replays, every fenced write, cancel, retry,
retrigger, idempotency and concurrency keys and ``wait_for_run`` go to the
primary through :class:`durably.database.Database`. A stale replica can show
an older state; it cannot make a run execute twice or get lost.

Read-your-writes: the :class:`Database` counts the write transactions it
commits. Before a replica read, if that count moved since the last sync, the
replica syncs first, so a run you have just triggered (or a step your worker
has just stored) is there when you read it back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool
from typing_extensions import ParamSpec

from ..errors import ReplicaSyncError, ValidationError
from .database import Database
from .driver_errors import is_driver_error, translate

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Replica:
    """Where and how often durably keeps an embedded replica of its remote database.

    ::

        durably = Durably(
            "libsql://my-db.turso.io",
            auth_token=token,
            replica=Replica("replica.db", sync_interval=60),
        )

    ``path`` is the local file. ``sync_interval`` (seconds) lets libSQL's
    client pull changes in the background; ``None`` leaves syncing to
    ``read_your_writes``. With ``read_your_writes`` (the default) the replica
    syncs before a read whenever this ``Durably`` has written since its last
    sync. The first read always syncs.

    :meth:`connect` and :meth:`sync` are the only places that touch libSQL's
    replication: everything durably decides stays on the primary.
    """

    path: str | os.PathLike[str]
    sync_interval: float | None = None
    read_your_writes: bool = True

    def __post_init__(self) -> None:
        if not os.fspath(self.path):
            raise ValidationError("Replica needs the path of a local file")
        if self.sync_interval is not None and not self.sync_interval > 0:
            raise ValidationError(f"sync_interval must be positive, got {self.sync_interval!r}")
        if self.sync_interval is None and not self.read_your_writes:
            raise ValidationError(
                "This replica would sync only once: give it a sync_interval or read_your_writes"
            )

    def connect(self, sync_url: str, auth_token: str | None) -> Any:
        """Open the replica file with libSQL's client, following ``sync_url``."""
        import libsql_experimental

        return libsql_experimental.connect(
            os.fspath(self.path),
            isolation_level=None,
            check_same_thread=False,
            sync_url=sync_url,
            sync_interval=self.sync_interval,
            auth_token=auth_token or "",
        )

    def sync(self, connection: Any) -> None:
        """Pull the primary's changes into the replica now."""
        connection.sync()


class ReplicaReader:
    """Runs durably's read functions on the replica, syncing it first when it must.

    One connection serves every read, one at a time: libSQL keeps one
    replicator (and one background sync thread) per connection, and two of
    them must not write the same file.
    """

    def __init__(self, replica: Replica, db: Database) -> None:
        self.replica = replica
        self._db = db
        self._sync_url, self._auth_token = db.remote_address()
        self._lock = threading.Lock()
        self._connection: Any = None
        self._synced_at: int | None = None
        """``db.writes`` when the replica last synced; None before the first sync."""
        # Each read is one statement in the driver's autocommit mode: no BEGIN,
        # which a replica may forward to the primary like a write.
        self.engine = sa.create_engine(
            "sqlite+libsql://", creator=self._connect, poolclass=StaticPool
        )

    def _connect(self) -> Any:
        self._connection = self.replica.connect(self._sync_url, self._auth_token)
        return self._connection

    def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(conn, ...)`` on the replica, after the sync read-your-writes asks for."""
        with self._lock:
            try:
                conn = self.engine.connect()
            except Exception as exc:
                # The first connection asks the primary for its settings.
                if not is_driver_error(exc):
                    raise
                raise self._failure(exc) from exc
            with conn:
                self._catch_up()
                try:
                    return fn(conn, *args, **kwargs)
                except Exception as exc:
                    if not is_driver_error(exc):
                        raise
                    raise translate(exc) from exc

    def _catch_up(self) -> None:
        writes = self._db.writes
        if self._synced_at is not None and (
            writes == self._synced_at or not self.replica.read_your_writes
        ):
            return
        try:
            self.replica.sync(self._connection)
        except Exception as exc:
            raise self._failure(exc) from exc
        self._synced_at = writes

    def _failure(self, exc: BaseException) -> ReplicaSyncError:
        return ReplicaSyncError(
            f"The embedded replica {os.fspath(self.replica.path)!r} could not sync from "
            f"{self._sync_url}: {getattr(exc, 'orig', None) or exc}"
        )

    def dispose(self) -> None:
        self.engine.dispose()
