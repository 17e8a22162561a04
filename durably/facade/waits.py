"""Durable waits from outside a run: signalling a wait, reading a run's waits.

A signal is a plain write transaction (:func:`durably.core.waits.signal_wait`):
it needs no worker. It wakes this process's workers at once when it made
a waiting run claimable; other processes' workers find that run at their
next poll.
"""

from __future__ import annotations

from typing import Any, Literal

from ..bridge import blocking
from ..core import waits as wait_store
from ..errors import ValidationError, WaitExpiredError
from ..events import EventType
from ..serialization import load, store
from ..waits import Wait
from .base import FacadeBase

Disposition = Literal["accepted", "duplicate"]


class Waits(FacadeBase):
    @blocking
    def signal(
        self, wait_id: str, payload: Any = None, *, signal_id: str | None = None
    ) -> Disposition:
        """Give a prepared wait its result: ``payload`` (a value durably stores) for ``step.wait_for``.

        Returns ``"accepted"``, or ``"duplicate"`` when a signal with this
        ``signal_id`` and an equal payload was accepted before (so a sender
        may retry safely). Raises :class:`~durably.ConflictError` if the wait
        already has another result (another signal, or the same ``signal_id``
        with a different payload) or its run has ended,
        :class:`~durably.WaitExpiredError` once its deadline has passed, and
        :class:`~durably.NotFoundError` for an unknown wait.
        """
        if not isinstance(wait_id, str) or not wait_id:
            raise ValidationError("wait_id must be a non-empty string")
        if signal_id is not None and (not isinstance(signal_id, str) or not signal_id):
            raise ValidationError("signal_id must be a non-empty string (or None)")
        payload_json = store(self._runtime.serializer, payload, what="A signal's payload")
        self._ensure_schema()
        runtime = self._runtime
        result = runtime.db.write(
            wait_store.signal_wait, wait_id, payload_json, signal_id, runtime.clock()
        )
        row = result.wait
        fields = {
            "run_id": row["run_id"],
            "job_name": result.job_name,
            "wait_id": wait_id,
            "wait_name": row["name"],
        }
        if result.disposition == "expired":
            runtime.events.emit(EventType.WAIT_TIMED_OUT, **fields)
            raise WaitExpiredError(f"Wait {wait_id} has timed out: its deadline has passed")
        if result.disposition == "duplicate":
            return "duplicate"
        runtime.events.emit(
            EventType.WAIT_SIGNALLED, data=load(runtime.serializer, payload_json), **fields
        )
        if result.woke:
            runtime.wake_workers()
        return "accepted"

    @blocking
    def get_wait(self, wait_id: str) -> Wait | None:
        """One wait by id; None if there is none (its run was deleted, or it never existed)."""
        row = self._reads.read(wait_store.read_wait, wait_id)
        return None if row is None else Wait.from_row(row, serializer=self._runtime.serializer)

    @blocking
    def get_waits(self, run_id: str) -> list[Wait]:
        """A run's waits and sleeps, in the order the job prepared them."""
        return [
            Wait.from_row(row, serializer=self._runtime.serializer)
            for row in self._reads.read(wait_store.list_waits, run_id)
        ]

    # -- async twins: the same calls in a database thread

    async def signal_async(
        self, wait_id: str, payload: Any = None, *, signal_id: str | None = None
    ) -> Disposition:
        return await self._runtime.call(self.signal, wait_id, payload, signal_id=signal_id)

    async def get_wait_async(self, wait_id: str) -> Wait | None:
        return await self._runtime.call(self.get_wait, wait_id)

    async def get_waits_async(self, run_id: str) -> list[Wait]:
        return await self._runtime.call(self.get_waits, run_id)
