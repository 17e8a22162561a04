"""The lease holder's operations, bound to a worker's settings and clock.

Both worker engines and the serverless ``process_one`` use the same
:class:`LeaseService`. It owns no threads and no loops: each method returns
an operation (``*_op``) for a driver to run, reading the clock as it is
built. The few plain methods (:meth:`claim`, :meth:`heartbeat`,
:meth:`complete`, :meth:`fail`, :meth:`release`) run theirs in the calling
thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from ..clock import now_ms
from ..config import Settings
from ..flow import DeclaredQueues
from ..status import StepStatus
from . import attempts, lease_writes
from .claim import claim_op
from .leases import ClaimedRun, Lease, RenewOutcome, RunningStep
from .operation import Operation, Storage, run


class LeaseService:
    """Claim, heartbeat, steps, progress, logs, completion, failure and release."""

    def __init__(
        self,
        db: Storage,
        settings: Settings,
        clock: Callable[[], int] = now_ms,
        queues: DeclaredQueues | None = None,
        dialect: str = "sqlite",
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        """Milliseconds since the epoch, as the lease columns hold them."""
        self.declared = DeclaredQueues() if queues is None else queues
        """The queue limits every claim keeps (:meth:`durably.Durably.queue`)."""
        self.dialect = dialect
        """The database's SQLAlchemy dialect name: PostgreSQL claims differently."""

    # -- claim ----------------------------------------------------------------

    def claim_op(
        self,
        worker_id: str,
        job_names: Collection[str],
        queues: frozenset[str] | None = None,
    ) -> Operation[ClaimedRun | None]:
        """Lease the next claimable run of ``job_names`` from ``queues`` (None: any queue),
        within the declared queue limits.

        See :mod:`durably.core.claim`.
        """
        return claim_op(
            worker_id,
            self.clock,
            self.settings,
            job_names,
            queues,
            self.declared.limits,
            self.dialect,
        )

    def claim(
        self,
        worker_id: str,
        job_names: Collection[str],
        queues: frozenset[str] | None = None,
    ) -> ClaimedRun | None:
        return run(self.claim_op(worker_id, job_names, queues), self.db)

    # -- heartbeat ------------------------------------------------------------

    def heartbeat_op(
        self, worker_ids: Sequence[str], leases: Sequence[Lease]
    ) -> Operation[RenewOutcome]:
        """Renew every lease held and mark the workers alive, in one transaction.

        A lease is renewed while its holder holds it, expired or not: it is
        lost once another worker claims the run (or it ends, or is
        cancelled). A renewed lease's local deadline is counted from before
        the write.
        """
        started = time.monotonic()
        now = self.clock()
        expires = now + self.settings.lease_ms
        renewed, lost = yield from lease_writes.renew_op(worker_ids, leases, now, expires)
        for lease in renewed:
            lease.extend(expires, started + self.settings.stale_threshold)
        return RenewOutcome(renewed, lost)

    def heartbeat(self, worker_ids: Sequence[str], leases: Sequence[Lease]) -> RenewOutcome:
        if not worker_ids and not leases:
            return RenewOutcome([], [])
        return run(self.heartbeat_op(worker_ids, leases), self.db)

    # -- steps, progress, logs -------------------------------------------------

    def record_cut_off_op(self, lease: Lease, steps: list[RunningStep]) -> Operation[None]:
        """Record steps cut off by a cancel or a shutdown as started: they read ``interrupted``."""
        return attempts.record_started_op(lease, steps)

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
        run_attempt: int,
        traceback: str | None = None,
    ) -> Operation[bool]:
        """Record one step execution and its attempt; False when the lease is no longer ours."""
        return lease_writes.persist_step_op(
            lease,
            self.clock(),
            name=name,
            index=index,
            status=status,
            output_json=output_json,
            error=error,
            started_at=started_at,
            run_attempt=run_attempt,
            traceback=traceback,
        )

    def set_progress_op(self, lease: Lease, progress_json: str | None) -> Operation[bool]:
        return lease_writes.set_progress_op(lease, self.clock(), progress_json)

    def append_log_op(
        self,
        lease: Lease,
        *,
        step_name: str | None,
        level: str,
        message: str,
        data_json: str | None,
    ) -> Operation[bool]:
        return lease_writes.append_log_op(
            lease,
            self.clock(),
            step_name=step_name,
            level=level,
            message=message,
            data_json=data_json,
        )

    # -- the run's end ---------------------------------------------------------

    def complete_op(self, lease: Lease, output_json: str | None) -> Operation[bool]:
        return lease_writes.complete_op(
            lease, self.clock(), output_json, keep_steps=self.settings.preserve_steps
        )

    def complete(self, lease: Lease, output_json: str | None) -> bool:
        return run(self.complete_op(lease, output_json), self.db)

    def fail_op(self, lease: Lease, error: str) -> Operation[tuple[bool, str | None]]:
        """Mark the run failed; whether that was accepted, and the name of the failed step."""
        return lease_writes.fail_op(lease, self.clock(), error)

    def fail(self, lease: Lease, error: str) -> tuple[bool, str | None]:
        return run(self.fail_op(lease, error), self.db)

    def schedule_retry_op(self, lease: Lease, error: str, delay: float) -> Operation[int | None]:
        """Put the run back to wait ``delay`` seconds for its next attempt.

        Returns when it becomes claimable (ms), or None if the lease was no longer ours.
        """
        now = self.clock()
        run_at = now + round(delay * 1000)
        accepted = yield from lease_writes.schedule_retry_op(lease, now, error, run_at)
        return run_at if accepted else None

    def fence_off_op(self, lease: Lease) -> Operation[Lease | None]:
        """Take the run from ``lease`` for this worker (see :func:`~.lease_writes.fence_off_op`).

        Returns the lease of the next generation, under which the worker
        records how the fenced-off attempt ended, or None if ``lease`` was
        no longer ours.
        """
        started = time.monotonic()
        now = self.clock()
        expires = now + self.settings.lease_ms
        if not (yield from lease_writes.fence_off_op(lease, now, expires)):
            return None
        return Lease(
            run_id=lease.run_id,
            job_name=lease.job_name,
            generation=lease.generation + 1,
            owner=lease.owner,
            labels=lease.labels,
            expires_at=expires,
            deadline=started + self.settings.stale_threshold,
        )

    def release_op(self, lease: Lease) -> Operation[bool]:
        return lease_writes.release_op(lease, self.clock())

    def release(self, lease: Lease) -> bool:
        return run(self.release_op(lease), self.db)

    def run_status_op(self, run_id: str) -> Operation[str | None]:
        return lease_writes.run_status_op(run_id)
