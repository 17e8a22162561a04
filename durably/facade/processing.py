"""Serverless processing: claim and run runs in the caller's thread or task, no worker needed."""

from __future__ import annotations

from collections.abc import Iterable

from ..bridge import blocking
from ..core import operation
from ..engines.run import execute, execute_async
from ..errors import ValidationError
from ..triggers import check_queue
from .base import FacadeBase


def check_queues(queues: Iterable[str] | None) -> frozenset[str] | None:
    """The queues a worker serves: None for every queue of its jobs, else a non-empty set."""
    if queues is None:
        return None
    if isinstance(queues, str):
        raise ValidationError(f"queues must be a list of queue names, not a string: {queues!r}")
    checked = frozenset(check_queue(queue) for queue in queues)
    if not checked:
        raise ValidationError("queues must name at least one queue (None: every queue)")
    return checked


class Processing(FacadeBase):
    worker_id: str

    @blocking
    def process_one(self, *, queues: Iterable[str] | None = None) -> bool:
        """Claim one run and execute it in this thread. False if nothing was claimable.

        The serverless primitive: no background worker needed. An ``async
        def`` job runs on durably's event-loop thread while this one waits.
        ``queues`` restricts the claim to runs of those queues.
        """
        served = check_queues(queues)
        self._ensure_schema()
        claimed = self._runtime.service.claim(self.worker_id, self._registry, served)
        if claimed is None:
            return False
        execute(self._runtime, claimed)
        return True

    async def process_one_async(self, *, queues: Iterable[str] | None = None) -> bool:
        """Claim one run and await it in the running loop (``def`` jobs run in a thread)."""
        served = check_queues(queues)
        runtime = self._runtime
        await runtime.call(self._ensure_schema)
        claimed = await operation.run_async(
            runtime.service.claim_op(self.worker_id, self._registry, served), runtime.async_db
        )
        if claimed is None:
            return False
        await execute_async(runtime, claimed)
        return True

    @blocking
    def process_until_idle(
        self, max_runs: int | None = None, *, queues: Iterable[str] | None = None
    ) -> int:
        """Process runs until none is claimable (or ``max_runs``); returns how many ran.

        A delayed run that is not due yet is not claimable: it does not keep
        this waiting. Idle maintenance (stale reaper, retention purge) runs
        only when the queue was actually drained.
        """
        _check_max_runs(max_runs)
        served = check_queues(queues)
        count = 0
        while max_runs is None or count < max_runs:
            if not self.process_one(queues=served):
                self._runtime.maintenance.run(force=True)
                break
            count += 1
        return count

    async def process_until_idle_async(
        self, max_runs: int | None = None, *, queues: Iterable[str] | None = None
    ) -> int:
        _check_max_runs(max_runs)
        served = check_queues(queues)
        count = 0
        while max_runs is None or count < max_runs:
            if not await self.process_one_async(queues=served):
                await self._runtime.call(self._runtime.maintenance.run, force=True)
                break
            count += 1
        return count


def _check_max_runs(max_runs: int | None) -> None:
    if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 0):
        raise ValidationError("max_runs must be a non-negative integer")
