"""The vocabulary of states: the one place statuses, levels and dispositions are spelled."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """Where a run is in its life. ``str`` subclass: ``run.status == "completed"`` holds."""

    PENDING = "pending"
    LEASED = "leased"
    WAITING = "waiting"
    """Suspended at ``step.sleep`` or ``step.wait_for``: no lease, no worker slot, until
    its time comes or its signal arrives (see docs/waits.md)."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.LEASED, RunStatus.WAITING})
RETRYABLE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
"""What ``retry`` puts back to pending."""


class WaitStatus(str, Enum):
    """Where a durable wait (``step.prepare_wait``, ``step.sleep``) stands.

    ``pending`` until it has a result: ``signalled`` (``durably.signal``) or
    ``timed_out`` (its deadline passed first; a sleep always ends so). A
    pending wait of a run that is cancelled becomes ``cancelled``; a retry of
    that run opens it again.
    """

    PENDING = "pending"
    SIGNALLED = "signalled"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class StepStatus(str, Enum):
    """How one execution of a step ended. Only ``completed`` steps are replayed."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class StepAttemptStatus(str, Enum):
    """Where one execution of a step's function stands (see ``Durably.get_step_attempts``).

    An attempt is written with how it ended, in the step result's
    transaction; ``started`` is written for a step still running when a
    heartbeat comes round, or cut off (``durably.core.attempts``). A worker
    that died, lost its lease or was stopped mid-step writes nothing more:
    its attempt reads back ``interrupted`` once the run has moved on without it.
    """

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


class LogLevel(str, Enum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class Disposition(str, Enum):
    """What a trigger did: made a new run, or returned an existing one."""

    CREATED = "created"
    IDEMPOTENT = "idempotent"
    COALESCED = "coalesced"

    def __str__(self) -> str:
        return self.value
