"""How a step attempt reaches ``durably_step_attempts``: with its outcome, or earlier as started.

An attempt is one call of a step's function. It is written once, in the
transaction of the step's result, with how it ended (``completed``,
``failed`` with its traceback): a step costs no write before its function
is called. A step that is still running is written as ``started`` by the
first heartbeat that finds it (:func:`started_rows`), which is what makes a
long step visible while it runs and leaves a trace when its worker dies;
the outcome then completes that row. A step cut off by a cancel, a shutdown
or a timeout is written as ``started`` when it is cut off, and reads
``interrupted`` (:class:`durably.models.StepAttempt`).

The two writers never need to know of each other: a run's attempt is keyed
by ``(run_id, lease_generation, step_index)`` (a lease generation runs each
step index at most once), a ``started`` row is inserted only if there is
none, and the outcome is inserted or, over a ``started`` row, updates it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import UpdateBase

from ..schema import runs, step_attempts
from ..status import StepAttemptStatus, StepStatus
from .leases import FENCE, NOW, Lease, RunningStep
from .operation import Operation, Write

_KEY = ("run_id", "lease_generation", "step_index")


def _insert(where: sa.ColumnElement[bool], status: Any, *, ended: bool) -> Any:
    """``INSERT … SELECT <an attempt> WHERE <where>`` for this module's two statements."""
    values: dict[str, Any] = {
        "run_id": sa.bindparam("fence_run", type_=sa.String),
        "step_name": sa.bindparam("step_name", type_=sa.String),
        "step_index": sa.bindparam("step_index", type_=sa.Integer),
        "run_attempt": sa.bindparam("run_attempt", type_=sa.Integer),
        "lease_generation": sa.bindparam("fence_generation", type_=sa.Integer),
        "status": status,
        "started_at": sa.bindparam("step_started", type_=sa.BigInteger),
    }
    if ended:
        values["error"] = sa.bindparam("step_error", type_=sa.Text)
        values["traceback"] = sa.bindparam("attempt_traceback", type_=sa.Text)
        values["completed_at"] = NOW
    return sqlite_insert(step_attempts).from_select(
        list(values), sa.select(*values.values()).where(sa.exists().where(where))
    )


_STILL_OURS = sa.and_(
    runs.c.id == sa.bindparam("fence_run", type_=sa.String),
    runs.c.lease_generation == sa.bindparam("fence_generation", type_=sa.Integer),
)
"""Nobody claimed the run since this lease's generation (it may have been cancelled or ended).

A ``started`` row is history, not a result: a worker cut off by a cancel
still records the step it was in. A run taken over since, or deleted, gets
nothing."""

_STARTED = _insert(
    _STILL_OURS, sa.literal_column(f"'{StepAttemptStatus.STARTED.value}'"), ended=False
).on_conflict_do_nothing(index_elements=_KEY)
"""A running step, unless its row is there already (its outcome won the race)."""

_ENDED_INSERT = _insert(FENCE, sa.bindparam("attempt_status", type_=sa.String), ended=True)
ENDED: UpdateBase = _ENDED_INSERT.on_conflict_do_update(
    index_elements=_KEY,
    set_={
        "status": _ENDED_INSERT.excluded.status,
        "error": _ENDED_INSERT.excluded.error,
        "traceback": _ENDED_INSERT.excluded.traceback,
        "completed_at": _ENDED_INSERT.excluded.completed_at,
    },
)
"""How the attempt ended, fenced like the step row it travels with (both or neither).

Parameters: the fence's, ``step_*`` as the step row's, ``run_attempt``,
``attempt_status`` and ``attempt_traceback``."""

ENDED_AS = {
    StepStatus.COMPLETED: StepAttemptStatus.COMPLETED.value,
    StepStatus.FAILED: StepAttemptStatus.FAILED.value,
    StepStatus.CANCELLED: StepAttemptStatus.INTERRUPTED.value,
}


def _started_params(lease: Lease, step: RunningStep) -> dict[str, Any]:
    return {
        "fence_run": lease.run_id,
        "fence_generation": lease.generation,
        "step_name": step.name,
        "step_index": step.index,
        "run_attempt": step.run_attempt,
        "step_started": step.started_at,
    }


def started_rows(
    lease: Lease, steps: Iterable[RunningStep]
) -> list[tuple[UpdateBase, dict[str, Any]]]:
    """The writes that record these running steps of ``lease`` as started.

    The heartbeat sends them for every step it finds running; the steps a
    cancel, a shutdown or a timeout cuts off are sent as they are cut off.
    """
    return [(_STARTED, _started_params(lease, step)) for step in steps]


def record_started_op(lease: Lease, steps: Iterable[RunningStep]) -> Operation[None]:
    """Write these steps of ``lease`` as started (cut off: they read ``interrupted``)."""
    batch = started_rows(lease, steps)
    if batch:
        yield Write(batch)
