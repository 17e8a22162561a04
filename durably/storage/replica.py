"""Embedded replicas: durably's read API served from a local copy of a remote primary.

A replica is a local file that pyturso's sync engine (``turso.sync``) keeps in
step with the primary: it pulls the pages the primary changed (``POST
/pull-updates`` on the sync server) and applies them locally. Reading it costs
no round trip, but it may be behind.

So durably never *decides* anything from a replica. Only the read API
(``get_run``, ``get_runs``, ``get_steps``, ``get_logs``, ``get_queue_stats``,
``get_workers`` and the jobs' ``get_run``/``get_runs``) reads it; the claim,
the stored steps a worker replays, every fenced write, cancel, retry,
retrigger, idempotency and concurrency keys and ``wait_for_run`` go to the
primary through :class:`durably.database.Database`. A stale replica can show
an older state; it cannot make a run execute twice or get lost.

Nothing is ever written through the replica. pyturso's ``push`` replays
local writes on the server as last-writer-wins statements with their WHERE
clauses dropped, which would undo every check durably's writes rely on
(fencing, ``WHERE status = …``). The reader's connection is opened with
``PRAGMA query_only`` and durably never calls ``push``.

How a replica is configured: ``Replica(path, sync_interval, read_your_writes,
sync_url=None, auth_token=None)``. The primary's URL and token are the
default sync source because on Turso Cloud one database serves both durably's
Hrana requests and pyturso's sync protocol at one address; ``sync_url`` (and
``auth_token``) name another server where they differ (a self-hosted sync
server, or the tests' ``tursodb --sync-server``). The first three arguments
keep their meaning from the earlier libSQL-client replica.

When it syncs: the replica opens at its first read (or ``sync()``), which
downloads the database if the file is new and pulls once. With
``sync_interval`` a daemon thread then pulls every that many seconds. With
``read_your_writes`` a read pulls first if this ``Durably`` committed a write
(its :class:`Database` counts them) since the last pull began. ``sync()``
pulls now. One lock serialises the connection, so a read waits for a pull in
flight (one round trip); pyturso's HTTP requests carry no timeout, so a read
that waits longer than ``lock_timeout`` raises :class:`ReplicaSyncError`
instead of hanging with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool
from typing_extensions import ParamSpec

from ..errors import ReplicaSyncError, ValidationError
from .database import Database
from .driver_errors import is_driver_error, translate
from .replica_metrics import ReplicaMetrics, SyncRecord

if TYPE_CHECKING:
    from turso.sync import ConnectionSync

T = TypeVar("T")
P = ParamSpec("P")
logger = logging.getLogger("durably")
SYNC_URL_SCHEMES = ("http://", "https://", "libsql://")
TICK = 1.0
"""Seconds between the sync thread's checks for writes the replica lacks (``sync_lag``)."""


class Replica:
    """Where and how often durably keeps an embedded replica of its remote database.

    ::

        replica = Replica("replica.db", sync_interval=60)
        durably = Durably("libsql://my-db.turso.io", auth_token=token, replica=replica)
        replica.sync()          # pull now
        replica.metrics()       # sync lag, failures, size, read latency, freshness

    ``path`` is the local file. ``sync_interval`` (seconds) pulls the
    primary's changes in a background thread; ``None`` leaves syncing to
    ``read_your_writes`` and :meth:`sync`. With ``read_your_writes`` (the
    default) a read first pulls whenever this ``Durably`` has written since
    the last pull. ``sync_url`` and ``auth_token`` name the sync server when
    it is not the primary (default: the primary's URL and token).

    A ``Replica`` serves one ``Durably`` at a time; :meth:`sync` and
    :meth:`metrics` work once it does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync_interval: float | None = None,
        read_your_writes: bool = True,
        *,
        sync_url: str | None = None,
        auth_token: str | None = None,
    ) -> None:
        if not os.fspath(path):
            raise ValidationError("Replica needs the path of a local file")
        if sync_interval is not None and not sync_interval > 0:
            raise ValidationError(f"sync_interval must be positive, got {sync_interval!r}")
        if sync_interval is None and not read_your_writes:
            raise ValidationError(
                "This replica would sync only once: give it a sync_interval or read_your_writes"
            )
        if sync_url is not None and not sync_url.startswith(SYNC_URL_SCHEMES):
            raise ValidationError(
                f"sync_url must be an http://, https:// or libsql:// address, got {sync_url!r}"
            )
        self.path = path
        self.sync_interval = sync_interval
        self.read_your_writes = read_your_writes
        self.sync_url = sync_url
        self.auth_token = auth_token
        self._reader: ReplicaReader | None = None

    def __repr__(self) -> str:
        return (
            f"Replica({os.fspath(self.path)!r}, sync_interval={self.sync_interval!r}, "
            f"read_your_writes={self.read_your_writes!r}, sync_url={self.sync_url!r})"
        )

    def sync(self) -> None:
        """Pull the primary's changes now (opening the replica first if it is not open).

        Raises :class:`ReplicaSyncError` if the pull fails; the failure is counted
        in :meth:`metrics`.
        """
        self._serving().sync()

    async def sync_async(self) -> None:
        """:meth:`sync` in a thread: the event loop does not wait for the pull."""
        await asyncio.to_thread(self.sync)

    def metrics(self) -> ReplicaMetrics:
        """Sync lag, failures, size, read latency, bytes pulled and freshness, measured here."""
        return self._serving().metrics()

    async def metrics_async(self) -> ReplicaMetrics:
        """:meth:`metrics` in a thread (it looks at the file's size)."""
        return await asyncio.to_thread(self.metrics)

    def _serving(self) -> ReplicaReader:
        reader = self._reader
        if reader is None:
            raise ValidationError(
                f"{self!r} serves no Durably: pass it as Durably(url, replica=...) first"
            )
        return reader

    def _attach(self, reader: ReplicaReader) -> None:
        if self._reader is not None:
            raise ValidationError(
                f"{self!r} already serves another Durably: give each Durably its own Replica"
            )
        self._reader = reader

    def _detach(self, reader: ReplicaReader) -> None:
        if self._reader is reader:
            self._reader = None


class ReplicaReader:
    """Runs durably's read functions on the replica, pulling first when it must.

    One pyturso connection serves every read and every pull, one at a time:
    pyturso's sync engine belongs to its connection, and the connection is
    not meant to be shared by threads at once.
    """

    def __init__(self, replica: Replica, db: Database) -> None:
        try:
            import turso.sqlalchemy  # noqa: F401  (registers sqlite+turso_sync; checks SQLAlchemy)
        except ImportError as exc:
            raise ValidationError(
                f"An embedded replica needs pyturso: pip install 'durably[replica]' ({exc})"
            ) from exc
        primary_url, primary_token = db.remote_address()
        self.replica = replica
        self.sync_url = replica.sync_url or primary_url
        self._auth_token = replica.auth_token if replica.auth_token is not None else primary_token
        self._db = db
        self._lock = threading.Lock()
        """The connection: one read or one pull at a time."""
        self._connection: ConnectionSync | None = None
        self._synced_writes = 0
        """``db.writes`` when the last successful pull began."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.record = SyncRecord()
        self.engine = sa.create_engine(
            "sqlite+turso_sync://", creator=self._open_connection, poolclass=StaticPool
        )
        replica._attach(self)

    # -- reads --------------------------------------------------------------------

    def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(conn, ...)`` on the replica, after the pull read-your-writes asks for."""
        with self._holding():
            self._ensure_open()
            if self.replica.read_your_writes and self._db.writes != self._synced_writes:
                self._pull()
            self._note_unsynced_writes()
            started = time.perf_counter()
            with self.engine.connect() as conn:
                try:
                    result = fn(conn, *args, **kwargs)
                except Exception as exc:
                    if not is_driver_error(exc):
                        raise
                    raise translate(exc) from exc
            self.record.read_took(time.perf_counter() - started)
            return result

    def sync(self) -> None:
        with self._holding():
            if self._connection is None:
                self._ensure_open()  # opening pulls
            else:
                self._pull()

    def metrics(self) -> ReplicaMetrics:
        self._note_unsynced_writes()
        return self.record.snapshot(self.replica.path)

    # -- the connection and its pulls ---------------------------------------------

    @contextmanager
    def _holding(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self._db.lock_timeout):
            raise ReplicaSyncError(
                f"The embedded replica {os.fspath(self.replica.path)!r} has been syncing from "
                f"{self.sync_url} for more than {self._db.lock_timeout:g}s"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _open_connection(self) -> ConnectionSync:
        """The engine's creator: the connection :meth:`_ensure_open` made."""
        if self._connection is None:  # pragma: no cover - the pool connects after _ensure_open
            raise ReplicaSyncError("the replica's connection is not open")
        return self._connection

    def _ensure_open(self) -> None:
        """Open (and, if new, download) the replica, pull once, start the sync thread."""
        if self._connection is not None:
            return
        import turso.sync

        started = time.monotonic()
        writes = self._db.writes
        try:
            connection = turso.sync.connect(
                os.fspath(self.replica.path),
                self.sync_url,
                auth_token=self._auth_token,
                client_name="durably",
                isolation_level=None,
            )
        except Exception as exc:
            raise self._failure(exc) from exc
        # A guard: the replica is only ever read (see the module's docstring).
        connection.execute("PRAGMA query_only = 1")
        self._connection = connection
        try:
            self._pull(started=started, writes=writes)
        except ReplicaSyncError:
            self._connection = None
            connection.close()
            raise
        if self.replica.sync_interval is not None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._sync_every_interval, name="durably-replica-sync", daemon=True
            )
            self._thread.start()

    def _pull(self, *, started: float | None = None, writes: int | None = None) -> None:
        """Pull the primary's changes; the caller holds the lock and the connection is open."""
        assert self._connection is not None
        started = time.monotonic() if started is None else started
        writes = self._db.writes if writes is None else writes
        try:
            self._connection.pull()
            pulled = int(self._connection.stats().network_received_bytes)
        except Exception as exc:
            raise self._failure(exc) from exc
        self._synced_writes = writes
        self.record.synced(started, complete=self._db.writes == writes, bytes_pulled=pulled)

    def _note_unsynced_writes(self) -> None:
        """If this Durably wrote since the last pull began, the replica lacks it from now on."""
        if self._db.writes != self._synced_writes and self._connection is not None:
            self.record.saw_unsynced_writes(time.monotonic())

    def _sync_every_interval(self) -> None:
        interval = self.replica.sync_interval
        assert interval is not None
        due = time.monotonic() + interval
        while not self._stop.wait(min(interval, TICK)):
            self._note_unsynced_writes()
            if time.monotonic() < due:
                continue
            try:
                with self._holding():
                    if self._connection is None or self._stop.is_set():
                        return
                    self._pull()
            except ReplicaSyncError as exc:
                logger.warning("%s", exc)
            due = time.monotonic() + interval

    def _failure(self, exc: BaseException) -> ReplicaSyncError:
        self.record.failed(exc)
        return ReplicaSyncError(
            f"The embedded replica {os.fspath(self.replica.path)!r} could not sync from "
            f"{self.sync_url}: {exc}"
        )

    def dispose(self) -> None:
        """Stop the sync thread and close the replica (the next read would open it again)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._db.lock_timeout)
        self.replica._detach(self)
        # A pull that hangs (pyturso's requests have no timeout) keeps the connection:
        # its daemon thread ends with the process.
        if not self._lock.acquire(timeout=self._db.lock_timeout):
            logger.warning("The embedded replica stayed busy syncing: left open at close")
            return
        try:
            self.engine.dispose()
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        finally:
            self._lock.release()
