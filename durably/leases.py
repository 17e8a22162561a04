"""The lease service: claim, heartbeat, step persistence, completion, reaper.

This module answers "how is a run claimed, kept and finished?". Both worker
engines (threads and asyncio) and the serverless ``process_one`` use the same
:class:`LeaseService`; it owns no threads and no loops, only database
operations, each of which is one short write transaction.

Fencing: a claim increments ``lease_generation``. Every write a lease holder
makes (step rows, progress, renewal, completion, failure) is guarded by
``status = 'leased' AND lease_generation = <the generation it claimed>``. A
worker that was paused or partitioned past its lease can therefore never
overwrite the work of the worker that reclaimed the run: its writes match no
row and it learns it has lost the lease.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.dml import UpdateBase

from . import operation, serialization
from . import runs as run_store
from .clock import now_ms
from .config import (
    AUTO_PURGE_BATCH,
    MAINTENANCE_INTERVAL,
    WORKER_DEAD_AFTER_STALE_THRESHOLDS,
    Settings,
)
from .database import Database, unique_violation
from .operation import Call, Operation, Write
from .schema import COUNTED_STEP_COUNTERS, logs, runs, sql_status, steps, workers
from .status import RunStatus, StepStatus

_LEASED = RunStatus.LEASED.value
_PENDING = RunStatus.PENDING.value
_ENDED = (RunStatus.COMPLETED.value, RunStatus.FAILED.value)


class AbortReason:
    CANCELLED = "cancelled"
    LEASE_LOST = "lease-lost"
    SHUTDOWN = "shutdown"
    """The worker is stopping and gave up waiting: hand the run to another worker."""


@dataclass(eq=False)
class Lease:
    """This process's hold on one claimed run.

    ``deadline`` is the local (monotonic) time at which the lease must be
    assumed lost even if the database cannot be reached to find out: the
    watchdog that keeps a partitioned worker from starting more steps.
    """

    run_id: str
    job_name: str
    generation: int
    owner: str
    labels: Mapping[str, str]
    expires_at: int
    deadline: float
    aborted: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    _abort_callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _abort_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def abort(self, reason: str) -> None:
        """Tell the run to stop (first reason wins); may be called from any thread."""
        with self._abort_lock:
            if self.abort_reason is None:
                self.abort_reason = reason
            first = not self.aborted.is_set()
            self.aborted.set()
            callbacks = list(self._abort_callbacks) if first else []
        for callback in callbacks:
            callback()

    def on_abort(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the aborting thread) when the lease is aborted.

        Called at once if it already was. The asyncio engine uses this to
        wake an awaiting step, since a ``threading.Event`` cannot be awaited.
        """
        with self._abort_lock:
            if not self.aborted.is_set():
                self._abort_callbacks.append(callback)
                return
        callback()

    def extend(self, expires_at: int, deadline: float) -> None:
        self.expires_at = expires_at
        self.deadline = deadline

    @property
    def expired_locally(self) -> bool:
        return time.monotonic() >= self.deadline


@dataclass(frozen=True)
class ClaimedRun:
    """A run this worker now holds, with the outputs of its completed steps."""

    row: Mapping[str, Any]
    lease: Lease
    completed_steps: Mapping[str, str | None]
    """Step name -> stored JSON output, for replay without touching the database."""


@dataclass(frozen=True)
class RenewOutcome:
    renewed: list[Lease]
    lost: list[tuple[Lease, str]]
    """Leases this worker no longer holds, with the reason (``AbortReason``)."""


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    engine: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


_SQL_LEASED = sql_status(RunStatus.LEASED)
_SQL_PENDING = sql_status(RunStatus.PENDING)


def _build_claim() -> sa.Update:
    """The claim: one ``UPDATE … RETURNING`` of the next claimable run, built once.

    The candidate is chosen by two index-driven arms (pending by id, that
    is by creation time; leased whose lease has expired), each skipping
    runs whose concurrency key is held by a live lease of any job, merged
    by id. Keeping the arms separate keeps the claim cheap however many
    finished runs the table holds. Parameters: ``claim_now``,
    ``claim_owner``, ``claim_expires``.
    """
    now = sa.bindparam("claim_now", type_=sa.BigInteger)
    other = runs.alias("other")

    def free_key(candidate: Any) -> Any:
        return sa.or_(
            candidate.c.concurrency_key.is_(None),
            ~sa.exists().where(
                other.c.concurrency_key == candidate.c.concurrency_key,
                other.c.status == _SQL_LEASED,
                other.c.lease_expires_at > now,
            ),
        )

    pending = runs.alias("pending")
    expired = runs.alias("expired")
    pending_arm = (
        sa.select(pending.c.id)
        .where(pending.c.status == _SQL_PENDING, free_key(pending))
        .order_by(pending.c.id)
        .limit(1)
        .subquery()
    )
    expired_arm = (
        sa.select(expired.c.id)
        .where(
            expired.c.status == _SQL_LEASED,
            expired.c.lease_expires_at <= now,
            free_key(expired),
        )
        .order_by(expired.c.id)
        .limit(1)
        .subquery()
    )
    both = sa.union_all(
        sa.select(pending_arm.c.id),
        sa.select(expired_arm.c.id),
    ).subquery()
    candidate = sa.select(both.c.id).order_by(both.c.id).limit(1)
    return (
        runs.update()
        .where(runs.c.id == candidate.scalar_subquery())
        .values(
            status=_SQL_LEASED,
            lease_owner=sa.bindparam("claim_owner", type_=sa.String),
            lease_expires_at=sa.bindparam("claim_expires", type_=sa.BigInteger),
            lease_generation=runs.c.lease_generation + 1,
            started_at=sa.func.coalesce(runs.c.started_at, now),
            updated_at=now,
        )
        .returning(*runs.c)
    )


_CLAIM = _build_claim()


def completed_steps(conn: Connection, run_id: str) -> dict[str, str | None]:
    """Step name -> stored JSON output of a run's completed steps: the replay cache."""
    return dict(
        conn.execute(
            sa.select(steps.c.name, steps.c.output).where(
                steps.c.run_id == run_id, steps.c.status == StepStatus.COMPLETED.value
            )
        ).all()  # a list: a Result has .keys(), so dict() would take it for a mapping
    )


def list_workers(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(sa.select(*workers.c).order_by(workers.c.started_at)).mappings())


# The writes a run makes at every step and at its end, built once (building
# and cache-keying a statement costs more than SQLite takes to run it). Each
# carries the fence as parameters: ``fence_run``, ``fence_generation``.
_FENCE = sa.and_(
    runs.c.id == sa.bindparam("fence_run", type_=sa.String),
    runs.c.status == _SQL_LEASED,
    runs.c.lease_generation == sa.bindparam("fence_generation", type_=sa.Integer),
)
_NOW = sa.bindparam("now", type_=sa.BigInteger)

_INSERT_STEP = steps.insert().from_select(
    [
        "run_id",
        "name",
        "step_index",
        "status",
        "output",
        "error",
        "lease_generation",
        "started_at",
        "completed_at",
    ],
    sa.select(
        sa.bindparam("fence_run", type_=sa.String),
        sa.bindparam("step_name", type_=sa.String),
        sa.bindparam("step_index", type_=sa.Integer),
        sa.bindparam("step_status", type_=sa.String),
        sa.bindparam("step_output", type_=sa.Text),
        sa.bindparam("step_error", type_=sa.Text),
        sa.bindparam("fence_generation", type_=sa.Integer),
        sa.bindparam("step_started", type_=sa.BigInteger),
        _NOW,
    ).where(sa.exists().where(_FENCE)),
)
"""A step row, inserted only if the lease still holds (INSERT … SELECT … WHERE EXISTS)."""

_SET_PROGRESS = (
    runs.update()
    .where(_FENCE)
    .values(progress=sa.bindparam("run_progress", type_=sa.Text), updated_at=_NOW)
)

_COMPLETE_RUN = (
    runs.update()
    .where(_FENCE)
    .values(
        status=sql_status(RunStatus.COMPLETED),
        **COUNTED_STEP_COUNTERS,
        output=sa.bindparam("run_output", type_=sa.Text),
        error=sa.null(),
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        completed_at=_NOW,
        updated_at=_NOW,
    )
)
_COMPLETED_BY_US = sa.exists().where(
    runs.c.id == sa.bindparam("fence_run", type_=sa.String),
    runs.c.status == sql_status(RunStatus.COMPLETED),
    runs.c.lease_generation == sa.bindparam("fence_generation", type_=sa.Integer),
)
"""After ``_COMPLETE_RUN`` in the same transaction: true only if that completion was ours."""
_FAIL_RUN = (
    runs.update()
    .where(_FENCE)
    .values(
        status=sql_status(RunStatus.FAILED),
        **COUNTED_STEP_COUNTERS,
        error=sa.bindparam("run_error", type_=sa.Text),
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        completed_at=_NOW,
        updated_at=_NOW,
    )
)
_RELEASE = runs.update().where(_FENCE).values(lease_expires_at=_NOW, updated_at=_NOW)
"""The lease expires now, so any worker may claim the run at once."""
_DELETE_STEPS = steps.delete().where(
    steps.c.run_id == sa.bindparam("fence_run", type_=sa.String), _COMPLETED_BY_US
)
_DELETE_LOGS = logs.delete().where(
    logs.c.run_id == sa.bindparam("fence_run", type_=sa.String), _COMPLETED_BY_US
)


_TOUCH_WORKER = (
    workers.update()
    .where(workers.c.id == sa.bindparam("worker_id", type_=sa.String))
    .values(last_heartbeat_at=_NOW)
)
_RENEW = (
    runs.update()
    .where(_FENCE, runs.c.lease_expires_at > _NOW)
    .values(lease_expires_at=sa.bindparam("expires", type_=sa.BigInteger), updated_at=_NOW)
)
"""A lease that has already expired is not renewed: the run is then anyone's to claim."""


def _why_not_renewed(conn: Connection, refused: Sequence[Lease]) -> list[tuple[Lease, str]]:
    """Why each of these leases could not be renewed; a lease that ended its own run lost nothing."""
    lost: list[tuple[Lease, str]] = []
    for lease in refused:
        current = conn.execute(
            sa.select(runs.c.status, runs.c.lease_generation).where(runs.c.id == lease.run_id)
        ).first()
        if current is None:
            lost.append((lease, AbortReason.LEASE_LOST))
        elif current.status == RunStatus.CANCELLED.value:
            lost.append((lease, AbortReason.CANCELLED))
        elif current.lease_generation == lease.generation and current.status in _ENDED:
            pass  # this lease itself just completed or failed the run: nothing lost
        else:
            lost.append((lease, AbortReason.LEASE_LOST))
    return lost


def _fence(lease: Lease, now: int) -> dict[str, Any]:
    return {"fence_run": lease.run_id, "fence_generation": lease.generation, "now": now}


class LeaseService:
    """Every database operation of the runtime, shared by all worker engines."""

    def __init__(self, db: Database, settings: Settings, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._last_maintenance = 0.0
        self._wal_mode: bool | None = None

    # -- claim ------------------------------------------------------------

    def claim(self, worker_id: str) -> ClaimedRun | None:
        """Lease the next claimable run (:meth:`claim_op`, run in this thread)."""
        return operation.run(self.claim_op(worker_id), self.db)

    def claim_op(self, worker_id: str) -> Operation[ClaimedRun | None]:
        """Lease the next claimable run: one atomic statement in its own transaction.

        A run that had completed steps before (it is being recovered) has
        them read afterwards: from the moment the claim commits, only this
        lease may write them, so the later read sees exactly what is stored.
        If that read fails, the lease is given back at once rather than left
        to expire.
        """
        started = time.monotonic()
        now = self.clock()
        params = {
            "claim_now": now,
            "claim_owner": worker_id,
            "claim_expires": now + self.settings.lease_ms,
        }
        (outcome,) = yield Write([(_CLAIM, params)])
        if not outcome.rows:
            return None
        row = outcome.rows[0]
        lease = Lease(
            run_id=row["id"],
            job_name=row["job_name"],
            generation=row["lease_generation"],
            owner=worker_id,
            labels=_labels(row),
            expires_at=row["lease_expires_at"],
            # Counted from before the claim, so the local deadline is never
            # later than the expiry the database holds.
            deadline=started + self.settings.stale_threshold,
        )
        completed: dict[str, str | None] = {}
        if row["lease_generation"] > 1:  # claimed before: it may have completed steps
            try:
                completed = yield Call(self.db.read, (completed_steps, row["id"]))
            except Exception:
                with contextlib.suppress(Exception):
                    yield from self.release_op(lease)
                raise
        return ClaimedRun(row=row, lease=lease, completed_steps=completed)

    # -- heartbeat --------------------------------------------------------

    def heartbeat(self, worker_ids: Sequence[str], leases: Sequence[Lease]) -> RenewOutcome:
        """Renew every lease held and mark the worker alive, in one transaction.

        A lease that has already expired cannot be renewed: once expired, the
        run belongs to whoever claims it next.
        """
        started = time.monotonic()
        now = self.clock()
        expires = now + self.settings.lease_ms
        batch: list[tuple[UpdateBase, dict[str, Any]]] = [
            (_TOUCH_WORKER, {"worker_id": worker_id, "now": now}) for worker_id in worker_ids
        ]
        batch += [(_RENEW, {**_fence(lease, now), "expires": expires}) for lease in leases]
        outcomes = self.db.write_batch(batch)[len(worker_ids) :] if batch else []
        renewed: list[Lease] = []
        refused: list[Lease] = []
        for lease, outcome in zip(leases, outcomes, strict=True):
            if outcome.rowcount == 1:
                lease.extend(expires, started + self.settings.stale_threshold)
                renewed.append(lease)
            else:
                refused.append(lease)
        lost = self.db.read(_why_not_renewed, refused) if refused else []
        return RenewOutcome(renewed, lost)

    # -- steps, progress, logs ----------------------------------------------

    def persist_step_op(
        self,
        lease: Lease,
        *,
        name: str,
        index: int,
        status: StepStatus,
        output_json: str | None,
        error: str | None,
        started_at: int,
    ) -> Operation[bool]:
        """Record one step execution; False when the lease is no longer ours.

        One fenced statement: when the fence fails it inserts nothing.
        """
        fence = _fence(lease, self.clock())
        row = {
            **fence,
            "step_name": name,
            "step_index": index,
            "step_status": status.value,
            "step_output": output_json,
            "step_error": error,
            "step_started": started_at,
        }
        # The run's step counters are counted from these rows when it is
        # read (schema.RUN_COLUMNS): the run's own row is not written here.
        (outcome,) = yield Write([(_INSERT_STEP, row)])
        return bool(outcome.rowcount == 1)

    def set_progress(self, lease: Lease, progress_json: str | None) -> bool:
        params = {**_fence(lease, self.clock()), "run_progress": progress_json}
        return self.db.write_batch([(_SET_PROGRESS, params)])[0].rowcount == 1

    def append_log(
        self,
        run_id: str,
        *,
        step_name: str | None,
        level: str,
        message: str,
        data_json: str | None,
    ) -> int:
        def _append(conn: Connection) -> int:
            result = conn.execute(
                logs.insert().values(
                    run_id=run_id,
                    step_name=step_name,
                    level=level,
                    message=message,
                    data=data_json,
                    created_at=self.clock(),
                )
            )
            pk = result.inserted_primary_key
            return int(pk[0]) if pk is not None else 0

        return self.db.write(_append)

    # -- finishing --------------------------------------------------------

    def complete(self, lease: Lease, output_json: str | None) -> bool:
        """Mark the run completed (:meth:`complete_op`, run in this thread)."""
        return operation.run(self.complete_op(lease, output_json), self.db)

    def complete_op(self, lease: Lease, output_json: str | None) -> Operation[bool]:
        """Mark the run completed (fenced); drop its steps and logs unless preserved.

        One transaction known up front; the deletes only match if the
        completion in front of them was ours.
        """
        fence = _fence(lease, self.clock())
        batch: list[tuple[UpdateBase, dict[str, Any]]] = [
            (_COMPLETE_RUN, {**fence, "run_output": output_json})
        ]
        if not self.settings.preserve_steps:
            batch += [(_DELETE_STEPS, fence), (_DELETE_LOGS, fence)]
        outcomes = yield Write(batch)
        return bool(outcomes[0].rowcount == 1)

    def fail(self, lease: Lease, error: str) -> tuple[bool, str | None]:
        """Mark the run failed (fenced). Steps are kept so ``retry`` can resume it.

        Returns whether the write was accepted and the name of the failed step.
        """

        def _fail(conn: Connection) -> tuple[bool, str | None]:
            params = {**_fence(lease, self.clock()), "run_error": error}
            if conn.execute(_FAIL_RUN, params).rowcount != 1:
                return False, None
            return True, run_store.failed_step_name(conn, lease.run_id)

        return self.db.write(_fail)

    def release(self, lease: Lease) -> bool:
        """Give a lease up early (:meth:`release_op`, run in this thread)."""
        return operation.run(self.release_op(lease), self.db)

    def release_op(self, lease: Lease) -> Operation[bool]:
        """Give a lease up early (interrupted, shutting down): the run is reclaimable now.

        The lease is expired rather than the run reset to pending, so no
        uniqueness rule can refuse it; the next claim takes it in FIFO order.
        """
        (outcome,) = yield Write([(_RELEASE, _fence(lease, self.clock()))])
        return bool(outcome.rowcount == 1)

    def run_status(self, run_id: str) -> str | None:
        def _status(conn: Connection) -> str | None:
            return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()

        return self.db.read(_status)

    # -- workers ----------------------------------------------------------

    def register_worker(self, identity: WorkerIdentity) -> None:
        def _register(conn: Connection) -> None:
            now = self.clock()
            conn.execute(workers.delete().where(workers.c.id == identity.id))
            conn.execute(
                workers.insert().values(
                    id=identity.id,
                    host=identity.host,
                    pid=identity.pid,
                    engine=identity.engine,
                    started_at=now,
                    last_heartbeat_at=now,
                )
            )

        self.db.write(_register)

    def deregister_worker(self, worker_id: str) -> None:
        def _deregister(conn: Connection) -> None:
            conn.execute(workers.delete().where(workers.c.id == worker_id))

        self.db.write(_deregister)

    # -- the stale reaper and other idle maintenance -------------------------

    def release_expired(self) -> int:
        """Turn expired leases back into pending runs, so status tells the truth.

        Claiming does not depend on this (a claim takes expired leases
        directly). A run whose job already has a pending run with the same
        concurrency key stays leased-and-expired: the claim still picks it up
        first, because it is older. No run is ever failed for being stale.
        """

        def _release(conn: Connection) -> int:
            now = self.clock()
            expired = list(
                conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.status == _LEASED, runs.c.lease_expires_at <= now
                    )
                ).scalars()
            )
            released = 0
            for run_id in expired:
                try:
                    result = conn.execute(
                        runs.update()
                        .where(
                            runs.c.id == run_id,
                            runs.c.status == _LEASED,
                            runs.c.lease_expires_at <= now,
                        )
                        .values(
                            status=_PENDING,
                            lease_owner=None,
                            lease_expires_at=None,
                            updated_at=now,
                        )
                    )
                except Exception as exc:
                    if unique_violation(exc) is None:
                        raise
                    continue
                released += result.rowcount
            return released

        return self.db.write(_release)

    def reap_workers(self) -> int:
        """Delete worker rows whose heartbeat stopped long ago (dead processes)."""
        dead_before = self.clock() - int(
            self.settings.stale_threshold * WORKER_DEAD_AFTER_STALE_THRESHOLDS * 1000
        )

        def _reap(conn: Connection) -> int:
            return conn.execute(
                workers.delete().where(workers.c.last_heartbeat_at < dead_before)
            ).rowcount

        return self.db.write(_reap)

    def purge_retained(self) -> int:
        retain = self.settings.retain_runs
        if retain is None:
            return 0
        cutoff = self.clock() - int(retain.total_seconds() * 1000)
        return run_store.purge(self.db, cutoff, AUTO_PURGE_BATCH)

    def checkpoint_wal(self) -> None:
        if self._wal_mode is None:
            self._wal_mode = self.db.journal_mode() == "wal"
        if self._wal_mode:
            self.db.checkpoint_wal()

    def maintenance_due(self) -> bool:
        return time.monotonic() - self._last_maintenance >= MAINTENANCE_INTERVAL

    def run_maintenance(self, *, force: bool = False) -> None:
        """Reaper, retention purge and WAL checkpoint; at most once a minute unless forced."""
        if not force and not self.maintenance_due():
            return
        self._last_maintenance = time.monotonic()
        self.release_expired()
        self.reap_workers()
        self.purge_retained()
        self.checkpoint_wal()


def _labels(row: Mapping[str, Any]) -> dict[str, str]:
    """The run's labels; {} if the stored JSON is damaged (the run then fails, see prepare)."""
    value = serialization.loads_or_text(row["labels"])
    return dict(value) if isinstance(value, dict) else {}
