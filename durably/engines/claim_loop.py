"""The claim loop's policy, shared by both worker engines.

A worker engine runs one loop that claims runs while a slot is free and
hands each to a slot (a thread, or a task). The decisions are the same for
both engines, and made here:

* **slots**: at most ``max_concurrent_runs`` runs at once; a full worker
  waits to be woken by a slot that frees up;
* **claim next in the same write**: a slot that finishes a run claims its
  next run in the write that records the end of the last one
  (:meth:`ClaimPolicy.claim_next_op`) and runs it itself, so a busy worker
  neither wakes its loop nor pays a transaction per claim;
* **polling**: with nothing claimable the loop waits ``polling_interval``,
  or less if a trigger in this process wakes it;
* **maintenance**: an idle worker (no run in any slot) runs the idle
  maintenance, at most once per interval;
* **errors**: a failed claim is reported as ``worker:error`` and retried
  after a jittered exponential backoff;
* **stopping**: no more claims; in-flight runs get the stop's timeout, then
  are told to stop at their next step, and those still inside a step a
  moment later are handed back (:meth:`ClaimPolicy.hand_back_op`).

Each engine's loop (:mod:`durably.engines.threads`,
:mod:`durably.engines.asyncio`) is these decisions spelled in its own kind
of waiting.
"""

from __future__ import annotations

import contextlib
import random

from ..core.leases import AbortReason, ClaimedRun, WorkerIdentity
from ..core.maintenance import deregister_worker_op, register_worker_op
from ..core.operation import Operation
from ..events import EventType
from .runtime import Runtime

MAX_ERROR_BACKOFF = 30.0
GIVE_UP_GRACE = 0.2
"""Seconds a stopping worker waits, once it told its runs to stop, for those between steps.

A run still inside a step after that is handed back at once (its step
cannot be interrupted), so ``stop(timeout)`` returns soon after ``timeout``."""
UNWIND_GRACE = 0.1
"""Seconds the asyncio engine gives the tasks of runs it handed back to unwind once
cancelled: their writes are fenced out, so nothing waits for them longer."""


def error_backoff(failures: int, base: float) -> float:
    """Seconds to wait after ``failures`` consecutive loop errors (jittered, capped)."""
    delay: float = min(MAX_ERROR_BACKOFF, base * 2.0 ** min(failures - 1, 16))
    return delay * (0.5 + random.random() / 2)


class ClaimPolicy:
    """One worker's claim decisions and the operations they need (see the module)."""

    def __init__(
        self, runtime: Runtime, identity: WorkerIdentity, queues: frozenset[str] | None = None
    ) -> None:
        self.runtime = runtime
        self.identity = identity
        self.queues = queues
        """The queues this worker serves; None: every queue of the jobs it has registered."""
        self.slots = runtime.settings.max_concurrent_runs
        self.polling_interval = runtime.settings.polling_interval
        self.stopping = False
        self._failures = 0

    @property
    def worker_id(self) -> str:
        return self.identity.id

    def has_free_slot(self, active: int) -> bool:
        return active < self.slots

    def claim_op(self) -> Operation[ClaimedRun | None]:
        return self.runtime.service.claim_op(self.worker_id, self.runtime.registry, self.queues)

    def claimed(self) -> None:
        """A claim went through (whether or not it found a run)."""
        self._failures = 0

    def claim_failed(self, exc: Exception) -> float:
        """Report a failed claim; the seconds to wait before the next."""
        self._failures += 1
        delay = error_backoff(self._failures, self.polling_interval)
        self.report(exc, "claim", retry_in=delay)
        return delay

    def claim_next_op(self, into: list[ClaimedRun]) -> Operation[None]:
        """Claim a slot's next run beside its last write; what it claims goes ``into`` the list.

        It never raises: a failed claim is left to the loop, which polls,
        backs off and reports.
        """
        if self.stopping:
            return
        with contextlib.suppress(Exception):
            found = yield from self.claim_op()
            if found is not None:
                into.append(found)

    def idle_wait(self) -> float:
        """Seconds to wait when nothing was claimable: the polling interval, or less if a
        delayed run this process knows of comes due sooner."""
        return self.runtime.due_times.wait(self.polling_interval, self.runtime.clock())

    def should_maintain(self, active: int) -> bool:
        """Idle maintenance runs only when nothing runs here, and when it is due."""
        return active == 0 and self.runtime.maintenance.due()

    def maintain(self) -> None:
        """The idle maintenance (blocking); a failure is reported, not raised."""
        try:
            self.runtime.maintenance.run()
        except Exception as exc:
            self.report(exc, "idle-maintenance")

    # -- registration and shutdown ----------------------------------------------

    def register_op(self) -> Operation[None]:
        return register_worker_op(self.identity, self.runtime.service.clock())

    def registered(self, add: bool) -> None:
        """Renew this worker's row with the process's heartbeat (or stop renewing it)."""
        heartbeat = self.runtime.heartbeat
        if add:
            heartbeat.worker_ids.add(self.worker_id)
            heartbeat.ensure_running()
        else:
            heartbeat.worker_ids.discard(self.worker_id)

    def deregister_op(self) -> Operation[None]:
        return deregister_worker_op(self.worker_id)

    def give_up_runs(self) -> None:
        """Ask this worker's runs to stop at their next step; their leases are then released."""
        for lease in self.runtime.leases.snapshot():
            if lease.owner == self.worker_id:
                lease.abort(AbortReason.SHUTDOWN)

    def hand_back_op(self) -> Operation[None]:
        """Hand back the runs this worker still holds, each inside a step that outlived the stop.

        They are pending again at once, for another worker to resume from
        their completed steps; a step that returns later has its result
        refused by the fence. A failure is reported: the lease then expires.
        """
        for lease in self.runtime.leases.snapshot():
            if lease.owner != self.worker_id:
                continue
            try:
                yield from self.runtime.service.release_op(lease)
            except Exception as exc:
                self.report(exc, "shutdown-hand-back", lease.run_id)

    def report(
        self,
        exc: BaseException,
        context: str,
        run_id: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        self.runtime.events.emit(
            EventType.WORKER_ERROR,
            run_id=run_id,
            error=str(exc),
            exception=exc,
            context=context,
            retry_in=retry_in,
        )
