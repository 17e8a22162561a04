"""What a worker holds while it runs a run: its lease, and the fence every write carries.

Fencing: a claim increments ``lease_generation``. Every write a lease holder
makes (step rows, progress, renewal, completion, failure) is guarded by
``status = 'leased' AND lease_generation = <the generation it claimed>``. A
worker that was paused or partitioned past its lease can therefore never
overwrite the work of the worker that reclaimed the run: its writes match no
row and it learns it has lost the lease.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .. import serialization
from ..schema import runs, sql_status
from ..status import RunStatus


class AbortReason:
    CANCELLED = "cancelled"
    LEASE_LOST = "lease-lost"
    SHUTDOWN = "shutdown"
    """The worker is stopping and gave up waiting: hand the run to another worker."""
    TIMED_OUT = "timed-out"
    """The attempt outlived its job's ``timeout``: it was fenced off, its end recorded without it."""


@dataclass(slots=True)
class RunningStep:
    """A step whose function is running now, which the heartbeat records as started.

    See :mod:`durably.core.attempts`: a step that ends before a heartbeat
    finds it is written once, with its outcome.
    """

    name: str
    index: int
    run_attempt: int
    started_at: int
    recorded: bool = False
    """Written as started already (by a heartbeat)."""


@dataclass(eq=False)
class Lease:
    """This process's hold on one claimed run.

    ``deadline`` is the local (monotonic) time after which the lease may
    have expired in the database: past it, the run starts no step before a
    renewal confirms the lease (``Execution.confirm_lease_op``), so a worker
    cut off from the database starts no more work.
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
    running_steps: dict[int, RunningStep] = field(default_factory=dict, repr=False)
    """The run's steps running now, by index (several when an ``async def`` job gathers)."""
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

    def unrecorded_steps(self) -> list[RunningStep]:
        """The steps running now that no heartbeat has written yet; safe from any thread.

        ``dict.copy`` is one step for the interpreter, so the worker adding or
        removing a step meanwhile cannot break the heartbeat's iteration.
        """
        return [step for step in self.running_steps.copy().values() if not step.recorded]


@dataclass(frozen=True)
class ClaimedRun:
    """A run this worker now holds, with the outputs of its completed steps."""

    row: Mapping[str, Any]
    lease: Lease
    completed_steps: Mapping[str, str | None]
    """Step name -> stored JSON output, for replay without touching the database."""
    step_failures: Mapping[str, int] = field(default_factory=dict)
    """Step name -> how many times it failed before (for a step's own retry policy)."""


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


FENCE = sa.and_(
    runs.c.id == sa.bindparam("fence_run", type_=sa.String),
    runs.c.status == sql_status(RunStatus.LEASED),
    runs.c.lease_generation == sa.bindparam("fence_generation", type_=sa.Integer),
)
"""Matches the run only while this lease holds it: parameters ``fence_run``, ``fence_generation``."""
NOW = sa.bindparam("now", type_=sa.BigInteger)
WAS_ABANDONED = sa.and_(
    runs.c.status == sql_status(RunStatus.LEASED), runs.c.lease_owner.is_not(None)
)
"""The run's lease was left to expire by its holder (not given back): taking it is a recovery.

A worker that hands a run back clears ``lease_owner``; one that crashed,
was killed or lost touch with the database leaves it set."""


def fence(lease: Lease, now: int) -> dict[str, Any]:
    """The parameters of :data:`FENCE` (and :data:`NOW`) for ``lease``."""
    return {"fence_run": lease.run_id, "fence_generation": lease.generation, "now": now}


def labels_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The run's labels; {} if the stored JSON is damaged (the run then fails, see execution)."""
    value = serialization.loads_or_text(row["labels"])
    return dict(value) if isinstance(value, dict) else {}
