"""What durably hands back: immutable, typed views of stored rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from typing_extensions import TypeVar as DefaultedTypeVar

from . import serialization
from .clock import maybe_datetime, to_datetime
from .serialization import Serializer
from .status import Disposition, LogLevel, RunStatus, StepAttemptStatus, StepStatus
from .timetable import SCHEDULE_LABEL, SCHEDULED_FOR_LABEL, parse_tick_label

_T = TypeVar("_T")
OutputT = DefaultedTypeVar("OutputT", default=Any)
"""A run's output type: its job's ``output`` model or return type (``Run`` alone: ``Any``)."""
_RUN_STATUSES = {status.value: status for status in RunStatus}
"""``RunStatus(value)`` as a dict lookup, which is several times cheaper than the enum's call."""


def _builder(cls: type[_T]) -> Callable[..., _T]:
    """A constructor for the frozen, slotted dataclass ``cls`` built cheaply.

    Why: every trigger returns a :class:`Run` per run it created, and a
    frozen dataclass's ``__init__`` stores each field through
    ``object.__setattr__``, which made building a batch trigger's runs cost
    more than inserting them (docs/contributing/performance-history.md).

    The builder makes an instance of an unfrozen twin (same fields, same
    slots, hence the same memory layout) and then makes it a ``cls``:
    Python allows assigning ``__class__`` only between classes of identical
    layout, and checks it. What comes out is an ordinary frozen ``cls``
    (tests/behaviour/test_run_api.py checks that).
    """
    twin = make_dataclass(
        f"_Unfrozen{cls.__name__}",
        [(f.name, f.type) for f in fields(cls)],  # type: ignore[arg-type]
        # Generic[...] too, for its empty slots: the layouts must match.
        bases=cls.__dict__.get("__orig_bases__", cls.__bases__),
        slots=True,
        eq=False,
        repr=False,
    )

    def build(*args: Any, **kwargs: Any) -> _T:
        instance = twin(*args, **kwargs)
        instance.__class__ = cls
        return instance  # type: ignore[no-any-return]

    return build


@dataclass(frozen=True, slots=True)
class Progress:
    """What ``step.progress(current, total, message)`` last reported."""

    current: float
    total: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"current": self.current}
        if self.total is not None:
            data["total"] = self.total
        if self.message is not None:
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Progress | None:
        if data is None:
            return None
        return cls(data["current"], data.get("total"), data.get("message"))


@dataclass(frozen=True, slots=True)
class Run(Generic[OutputT]):
    """One execution request of a job, as stored.

    ``disposition`` is set only on the value returned by a trigger: it says
    whether the trigger created this run or returned an existing one.
    ``Run[Receipt]`` is a run whose ``output`` is a ``Receipt`` once it has
    completed: what a job's trigger returns when the job declares it
    (``output=Receipt`` or its function's return type).
    """

    id: str
    job_name: str
    status: RunStatus
    input: Any
    output: OutputT | None
    """What the job returned, once the run has completed; None before."""
    error: str | None
    labels: Mapping[str, str]
    progress: Progress | None
    idempotency_key: str | None
    concurrency_key: str | None
    current_step_index: int
    completed_step_count: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_generation: int
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    recovery_count: int
    """Times the run was taken over after its worker stopped renewing its lease."""
    queue: str
    priority: int
    """Higher runs first; equal priorities in the order they became claimable."""
    run_at: datetime
    """When the run is (or was) claimable: its trigger time, later for a delayed run or
    one waiting out a retry's backoff; for a ``waiting`` run, when it wakes (9999-12-31
    while it waits for a signal with no deadline). Aware UTC."""
    attempt: int
    """Which attempt of the run this is (or was last): 1 for the first."""
    disposition: Disposition | None = field(default=None, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_active(self) -> bool:
        return self.status.is_active

    @property
    def schedule(self) -> str | None:
        """The schedule that made this run (its ``durably.schedule`` label), None if none did."""
        return self.labels.get(SCHEDULE_LABEL)

    @property
    def scheduled_for(self) -> datetime | None:
        """The tick this run was made for (its ``durably.scheduled_for`` label), aware UTC.

        For a run of ``trigger_schedule``, the moment it was triggered.
        """
        return parse_tick_label(self.labels.get(SCHEDULED_FOR_LABEL))

    def with_disposition(self, disposition: Disposition) -> Run[OutputT]:
        return replace(self, disposition=disposition)

    @classmethod
    def from_written(
        cls, written: Mapping[str, Any], created_at: datetime, serializer: Serializer
    ) -> Run:
        """The run a trigger has just inserted, from the columns it wrote.

        The columns a trigger leaves out hold the schema's defaults for a new
        run (no output, no lease, no step counted: the ``server_default`` of
        :mod:`durably.schema`), so they are not read back;
        tests/behaviour/test_trigger.py compares what every way to trigger
        returns with the stored run.
        """
        labels_json = written["labels"]
        return _build_run(  # by position: a trigger builds one per run it creates
            written["id"],
            written["job_name"],
            _RUN_STATUSES[written["status"]],
            serialization.load_or_text(serializer, written["input"]),
            None,  # output
            None,  # error
            {} if labels_json == "{}" else _labels(labels_json),
            None,  # progress
            written.get("idempotency_key"),
            written.get("concurrency_key"),
            0,  # current_step_index
            0,  # completed_step_count
            None,  # lease_owner
            None,  # lease_expires_at
            0,  # lease_generation
            None,  # started_at
            None,  # completed_at
            created_at,
            created_at,  # updated_at
            0,  # recovery_count
            written["queue"],
            written["priority"],
            created_at
            if written["run_at"] == written["created_at"]
            else to_datetime(written["run_at"]),
            1,  # attempt
            Disposition.CREATED,
        )

    @classmethod
    def from_row(
        cls,
        row: Mapping[Any, Any],
        disposition: Disposition | None = None,
        *,
        serializer: Serializer,
    ) -> Run:
        output_json, progress_json = row["output"], row["progress"]
        return _build_run(
            id=row["id"],
            job_name=row["job_name"],
            status=_RUN_STATUSES[row["status"]],
            input=serialization.load_or_text(serializer, row["input"]),
            output=serialization.load_or_text(serializer, output_json),
            error=row["error"],
            labels=_labels(row["labels"]),
            progress=(
                None
                if progress_json is None
                else Progress.from_json(serialization.loads_or_text(progress_json))
            ),
            idempotency_key=row["idempotency_key"],
            concurrency_key=row["concurrency_key"],
            current_step_index=row["current_step_index"],
            completed_step_count=row["completed_step_count"],
            lease_owner=row["lease_owner"],
            lease_expires_at=maybe_datetime(row["lease_expires_at"]),
            lease_generation=row["lease_generation"],
            started_at=maybe_datetime(row["started_at"]),
            completed_at=maybe_datetime(row["completed_at"]),
            created_at=to_datetime(row["created_at"]),
            updated_at=to_datetime(row["updated_at"]),
            recovery_count=row["recovery_count"],
            queue=row["queue"],
            priority=row["priority"],
            run_at=to_datetime(row["run_at"]),
            attempt=row["attempt"],
            disposition=disposition,
        )


_build_run = _builder(Run)
"""``Run(...)`` without the cost of a frozen ``__init__`` (see :func:`_builder`)."""


def _labels(labels_json: str) -> Mapping[str, str]:
    labels: Mapping[str, str] = serialization.loads_or_text(labels_json) or {}
    return labels


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded execution of a named step."""

    id: int
    run_id: str
    name: str
    index: int
    status: StepStatus
    output: Any
    error: str | None
    lease_generation: int
    started_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, serializer: Serializer) -> Step:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            name=row["name"],
            index=row["step_index"],
            status=StepStatus(row["status"]),
            output=serialization.load_or_text(serializer, row["output"]),
            error=row["error"],
            lease_generation=row["lease_generation"],
            started_at=to_datetime(row["started_at"]),
            completed_at=maybe_datetime(row["completed_at"]),
        )


@dataclass(frozen=True, slots=True)
class StepAttempt:
    """One call of a step's function: when it ran, under which attempt of the run, how it ended.

    Replayed steps make none. Kept (unlike the steps of a completed run)
    until the run is deleted or purged, so a run's failures stay readable
    after it succeeded, each with its full ``traceback``.
    """

    id: int
    run_id: str
    step_name: str
    step_index: int
    run_attempt: int
    """The run's ``attempt`` this step attempt belongs to (1 for the first)."""
    lease_generation: int
    status: StepAttemptStatus
    error: str | None
    """``"Type: message"`` for a failed attempt (what the run's ``error`` holds)."""
    traceback: str | None
    """The full traceback of a failed attempt, as Python prints it."""
    started_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StepAttempt:
        """Read an attempt, with its run's ``run_status`` and ``run_lease_generation``.

        A worker that dies mid-step writes nothing more, so an attempt still
        ``started`` is ``interrupted`` once its run has moved on: claimed
        again (a newer lease generation), or no longer leased at all
        (handed back, cancelled, ended). While the lease that started it
        still holds, it may be running, and reads ``started``.
        """
        status = StepAttemptStatus(row["status"])
        if status is StepAttemptStatus.STARTED and (
            row["run_status"] != RunStatus.LEASED.value
            or row["run_lease_generation"] != row["lease_generation"]
        ):
            status = StepAttemptStatus.INTERRUPTED
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            step_name=row["step_name"],
            step_index=row["step_index"],
            run_attempt=row["run_attempt"],
            lease_generation=row["lease_generation"],
            status=status,
            error=row["error"],
            traceback=row["traceback"],
            started_at=to_datetime(row["started_at"]),
            completed_at=maybe_datetime(row["completed_at"]),
        )


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A ``step.log.*`` message, persisted with the run."""

    id: int
    run_id: str
    step_name: str | None
    level: LogLevel
    message: str
    data: Any
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, serializer: Serializer) -> LogEntry:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            step_name=row["step_name"],
            level=LogLevel(row["level"]),
            message=row["message"],
            data=serialization.load_or_text(serializer, row["data"]),
            created_at=to_datetime(row["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker engine as registered in ``durably_workers``."""

    id: str
    host: str
    pid: int
    engine: str
    started_at: datetime
    last_heartbeat_at: datetime
    is_stale: bool

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, stale_before: int) -> WorkerInfo:
        return cls(
            id=row["id"],
            host=row["host"],
            pid=row["pid"],
            engine=row["engine"],
            started_at=to_datetime(row["started_at"]),
            last_heartbeat_at=to_datetime(row["last_heartbeat_at"]),
            is_stale=row["last_heartbeat_at"] < stale_before,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How much work waits and for how long: the numbers to alert on.

    ``running`` counts runs leased by live workers (their lease is current);
    ``stale`` counts leased runs whose lease expired: their worker stopped
    renewing it (it died, was paused, or cannot reach the database), and any
    worker may reclaim them. ``stale`` above zero for longer than a polling
    interval means no worker is taking them over: none runs their job, or
    every worker is busy. ``oldest_pending_age`` growing means workers are
    too few, stopped, or cannot reach the database.
    """

    pending: int
    running: int
    stale: int
    oldest_pending_age: timedelta | None
    waiting: int = 0
    """Runs suspended at a durable sleep or wait: they hold no worker."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as stored: what ``durably.schedule(...)`` declared, and its state.

    Exactly one of ``cron`` (a 5-field expression, in ``timezone``) and
    ``every`` is set. ``last_tick`` is the latest tick handled (its run
    enqueued, or skipped by the catch-up policy), or the moment the
    schedule was declared, or resumed, if no tick came since; only later
    ticks make runs. ``next_tick`` is when the next one comes (None while
    paused, or for a cron schedule where ``cronsim`` is not installed).
    """

    name: str
    job_name: str
    cron: str | None
    every: timedelta | None
    timezone: str
    input: Any
    labels: Mapping[str, str]
    catch_up: str
    paused: bool
    last_tick: datetime
    next_tick: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(
        cls, row: Mapping[Any, Any], next_tick: int | None, *, serializer: Serializer
    ) -> Schedule:
        every_ms = row["every_ms"]
        return cls(
            name=row["name"],
            job_name=row["job_name"],
            cron=row["cron"],
            every=None if every_ms is None else timedelta(milliseconds=every_ms),
            timezone=row["timezone"],
            input=serialization.load_or_text(serializer, row["input"]),
            labels=_labels(row["labels"]),
            catch_up=row["catch_up"],
            paused=bool(row["paused"]),
            last_tick=to_datetime(row["last_tick_at"]),
            next_tick=maybe_datetime(next_tick),
            created_at=to_datetime(row["created_at"]),
            updated_at=to_datetime(row["updated_at"]),
        )
