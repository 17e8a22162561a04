"""The worker registry and idle maintenance: the reaper, worker reaping, retention,
old claim times of rate-limited queues.

None of this is on a run's path. A worker engine registers itself when it
starts, and an idle worker runs :func:`maintenance_op` at most once per
``MAINTENANCE_INTERVAL`` (see :class:`durably.engines.maintenance.Maintenance`).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..config import AUTO_PURGE_BATCH, WORKER_DEAD_AFTER_STALE_THRESHOLDS, Settings
from ..schema import runs, workers
from ..status import RunStatus
from ..storage.driver_errors import unique_violation
from ..storage.statements import Outcome
from .flow_control import prune_claims_op
from .leases import NOW, WAS_ABANDONED, WorkerIdentity
from .operation import Operation, Transaction, Write
from .runs import purge_op

_LEASED = RunStatus.LEASED.value
_PENDING = RunStatus.PENDING.value

_DELETE_WORKER = workers.delete().where(workers.c.id == sa.bindparam("worker_id", type_=sa.String))
_INSERT_WORKER = workers.insert().values(
    id=sa.bindparam("worker_id", type_=sa.String),
    host=sa.bindparam("host", type_=sa.String),
    pid=sa.bindparam("pid", type_=sa.Integer),
    engine=sa.bindparam("engine", type_=sa.String),
    started_at=NOW,
    last_heartbeat_at=NOW,
)
_REAP_WORKERS = workers.delete().where(
    workers.c.last_heartbeat_at < sa.bindparam("dead_before", type_=sa.BigInteger)
)


def register_worker_op(identity: WorkerIdentity, now: int) -> Operation[None]:
    params = {
        "worker_id": identity.id,
        "host": identity.host,
        "pid": identity.pid,
        "engine": identity.engine,
        "now": now,
    }
    yield Write([(_DELETE_WORKER, params), (_INSERT_WORKER, params)])


def deregister_worker_op(worker_id: str) -> Operation[None]:
    yield Write([(_DELETE_WORKER, {"worker_id": worker_id})])


def list_workers(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(sa.select(*workers.c).order_by(workers.c.started_at)).mappings())


def maintenance_op(
    now: int, settings: Settings, longest_window_ms: int | None = None
) -> Operation[None]:
    """The reaper, worker reaping, pruning the claim times of rate-limited queues (older
    than ``longest_window_ms`` and a margin) and the retention purge, one after the other."""
    yield Transaction(release_expired, (now,))
    yield from reap_workers_op(now, settings)
    yield from prune_claims_op(now, longest_window_ms)
    if settings.retain_runs is not None:
        yield from purge_op(now - _ms(settings.retain_runs), AUTO_PURGE_BATCH)


def reap_workers_op(now: int, settings: Settings) -> Operation[int]:
    """Delete worker rows whose heartbeat stopped long ago (dead processes)."""
    dead_for = settings.stale_threshold * WORKER_DEAD_AFTER_STALE_THRESHOLDS
    outcome: Outcome
    (outcome,) = yield Write([(_REAP_WORKERS, {"dead_before": now - int(dead_for * 1000)})])
    return outcome.rowcount


def release_expired(conn: Connection, now: int) -> int:
    """Turn expired leases back into pending runs, so status tells the truth.

    Claiming does not depend on this (a claim takes expired leases
    directly). A run whose job already has a pending run with the same
    concurrency key stays leased-and-expired: the claim still picks it up
    first, because it is older. An expired lease its holder did not give
    back counts as a recovery, as when a claim takes it directly.
    """
    expired = list(
        conn.execute(
            sa.select(runs.c.id).where(runs.c.status == _LEASED, runs.c.lease_expires_at <= now)
        ).scalars()
    )
    released = 0
    # On PostgreSQL a refused statement aborts the transaction it is in: each
    # release gets a savepoint there, so a refused one is undone alone.
    savepoints = conn.dialect.name == "postgresql"
    for run_id in expired:
        savepoint = conn.begin_nested() if savepoints else None
        try:
            result = conn.execute(
                runs.update()
                .where(
                    runs.c.id == run_id, runs.c.status == _LEASED, runs.c.lease_expires_at <= now
                )
                .values(
                    status=_PENDING,
                    lease_owner=None,
                    lease_expires_at=None,
                    recovery_count=runs.c.recovery_count + sa.case((WAS_ABANDONED, 1), else_=0),
                    updated_at=now,
                )
            )
        except Exception as exc:
            if unique_violation(exc) is None:
                raise
            if savepoint is not None:
                savepoint.rollback()
            continue
        if savepoint is not None:
            savepoint.commit()
        released += result.rowcount
    return released


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)
