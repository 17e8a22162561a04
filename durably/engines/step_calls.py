"""One call of ``step.run`` as the engine sees it, and what a failed one leaves behind.

A call either replays a stored result or runs the step's function; a call
that runs it is a *step attempt*, recorded (``durably_step_attempts``) with
its outcome in the same transaction as the step's row, or as started by a
heartbeat that finds it running (:mod:`durably.core.attempts`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core.leases import ClaimedRun
from ..instrumentation import Instrumentation, RunAttempt
from ..retry import Retry

T = TypeVar("T")


@dataclass(slots=True)
class StepCall:
    """A ``step.run(name, fn)`` reached by the job: replayed, or about to run."""

    name: str
    index: int
    """Position in the job's code order (replayed steps count)."""
    replayed: bool
    output: Any = None
    """The stored output, when ``replayed``."""
    started_at: int = 0
    started: float = 0.0
    retry: Retry | None = None
    """The step's own retry policy, if it has one."""


def describe(exc: BaseException) -> str:
    """The error text stored on a failed run, step or attempt: ``"ValueError: bad input"``."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def format_traceback(exc: BaseException) -> str:
    """The full traceback of a step's failure, as Python prints it, chained causes included.

    Kept on the step attempt: a run's ``error`` holds only ``"Type: message"``.
    """
    return "".join(traceback.format_exception(exc))


def traced_step(
    instrumentation: Instrumentation, claimed: ClaimedRun, call: StepCall, fn: Callable[[], T]
) -> Callable[[], T]:
    """A step's function as ``instrumentation`` wraps it (:mod:`durably.instrumentation`)."""
    return instrumentation.wrap_step(RunAttempt.of(claimed.row), call.name, call.index, fn)
