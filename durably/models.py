"""What durably hands back: immutable, typed views of stored rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from . import serialization
from .clock import maybe_datetime, to_datetime
from .status import Disposition, LogLevel, RunStatus, StepStatus

_RUN_STATUSES = {status.value: status for status in RunStatus}
"""``RunStatus(value)`` as a dict lookup: the enum's call costs a microsecond."""
_T = TypeVar("_T")


def _builder(cls: type[_T]) -> Callable[..., _T]:
    """A fast constructor for the frozen, slotted dataclass ``cls``: its fields, by position.

    A frozen dataclass's ``__init__`` stores each field through
    ``object.__setattr__``, as its own ``__setattr__`` refuses: 29,000
    machine instructions for a :class:`Run`'s twenty fields (cachegrind),
    about 5 µs, half of what SQLite takes to insert a run in a batch. The
    same class without ``frozen`` stores them with plain attribute writes:
    2,400.

    So the builder makes an instance of that unfrozen twin (same fields,
    same slots, so the same memory layout) and then makes it a ``cls``:
    Python allows changing ``__class__`` only between classes of identical
    layout, and checks it. What comes out is an ordinary, frozen ``cls``.
    Only ``from_row`` uses it, for the rows durably turns into models.
    """
    twin = make_dataclass(
        f"_Unfrozen{cls.__name__}",
        [(f.name, f.type) for f in fields(cls)],  # type: ignore[arg-type]
        slots=True,
        eq=False,
        repr=False,
    )

    def build(*values: Any) -> _T:
        instance = twin(*values)
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
class Run:
    """One execution request of a job, as stored.

    ``disposition`` is set only on the value returned by a trigger: it says
    whether the trigger created this run or returned an existing one.
    """

    id: str
    job_name: str
    status: RunStatus
    input: Any
    output: Any
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
    disposition: Disposition | None = field(default=None, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_active(self) -> bool:
        return self.status.is_active

    def with_disposition(self, disposition: Disposition) -> Run:
        return replace(self, disposition=disposition)

    @classmethod
    def from_written(cls, written: Mapping[str, Any], created_at: datetime) -> Run:
        """The run a trigger has just inserted, from the columns it wrote.

        The columns a trigger leaves out hold the schema's defaults for a
        new run (no output, no lease, no step counted), so they are not
        looked up, and the runs of one trigger share its ``created_at``.
        For a batch of 5,000 runs this is half of what building them with
        :meth:`from_row` cost (1.4 against 3.1 µs per run). The values here
        are the ``server_default`` of :mod:`durably.schema`; tests/test_trigger.py
        compares what every way to trigger returns with the stored run.
        """
        labels_json = written["labels"]
        return _build_run(
            written["id"],
            written["job_name"],
            _RUN_STATUSES[written["status"]],
            serialization.loads_or_text(written["input"]),
            None,
            None,
            {} if labels_json == "{}" else serialization.loads_or_text(labels_json),
            None,
            written.get("idempotency_key"),
            written.get("concurrency_key"),
            0,
            0,
            None,
            None,
            0,
            None,
            None,
            created_at,
            created_at,
            Disposition.CREATED,
        )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], disposition: Disposition | None = None) -> Run:
        # Every trigger returns a Run built here, so it skips work where it
        # can: a new run's two times are one time, most runs have no labels,
        # and a pending run has no output or progress to decode.
        created_at = to_datetime(row["created_at"])
        updated_at = (
            created_at if row["updated_at"] == row["created_at"] else to_datetime(row["updated_at"])
        )
        labels_json, output_json, progress_json = row["labels"], row["output"], row["progress"]
        return _build_run(
            row["id"],
            row["job_name"],
            _RUN_STATUSES[row["status"]],
            serialization.loads_or_text(row["input"]),
            None if output_json is None else serialization.loads_or_text(output_json),
            row["error"],
            {} if labels_json == "{}" else serialization.loads_or_text(labels_json) or {},
            (
                None
                if progress_json is None
                else Progress.from_json(serialization.loads_or_text(progress_json))
            ),
            row["idempotency_key"],
            row["concurrency_key"],
            row["current_step_index"],
            row["completed_step_count"],
            row["lease_owner"],
            maybe_datetime(row["lease_expires_at"]),
            row["lease_generation"],
            maybe_datetime(row["started_at"]),
            maybe_datetime(row["completed_at"]),
            created_at,
            updated_at,
            disposition,
        )


_build_run = _builder(Run)


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
    def from_row(cls, row: Mapping[Any, Any]) -> Step:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            name=row["name"],
            index=row["step_index"],
            status=StepStatus(row["status"]),
            output=serialization.loads_or_text(row["output"]),
            error=row["error"],
            lease_generation=row["lease_generation"],
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
    def from_row(cls, row: Mapping[Any, Any]) -> LogEntry:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            step_name=row["step_name"],
            level=LogLevel(row["level"]),
            message=row["message"],
            data=serialization.loads_or_text(row["data"]),
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

    ``oldest_pending_age`` growing means workers are too few, stopped, or
    cannot reach the database; ``running`` above the workers' total
    concurrency means leases are being held by workers that died (they
    expire after ``stale_threshold``).
    """

    pending: int
    running: int
    oldest_pending_age: timedelta | None
