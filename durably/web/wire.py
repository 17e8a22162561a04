"""durably's models and events as JSON, in Durably-TS's camelCase shapes.

``client_run`` is TS's ``ClientRun``: a run without what only the workers
need (keys, lease owner and expiry, fencing token, ``updatedAt``), with
``isTerminal`` and ``isActive``. Fields durably has and TS does not
(``queue``, ``priority``, ``runAt``, ``attempt``) are added: clients that
do not know them ignore them. Durations are milliseconds, as in TS.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..events import Event, EventType
from ..models import LogEntry, Progress, QueueStats, Run, Schedule, Step, StepAttempt, WorkerInfo
from ..status import RunStatus
from ..waits import Wait
from .http import iso


def progress(value: Progress | None) -> dict[str, Any] | None:
    return None if value is None else value.to_json()


def client_run(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "jobName": run.job_name,
        "input": run.input,
        "status": run.status.value,
        "currentStepIndex": run.current_step_index,
        "completedStepCount": run.completed_step_count,
        "progress": progress(run.progress),
        "output": run.output,
        "error": run.error,
        "labels": dict(run.labels),
        "startedAt": iso(run.started_at),
        "completedAt": iso(run.completed_at),
        "createdAt": iso(run.created_at),
        "isTerminal": run.is_terminal,
        "isActive": run.is_active,
        "queue": run.queue,
        "priority": run.priority,
        "runAt": iso(run.run_at),
        "attempt": run.attempt,
        "isWaiting": run.status is RunStatus.WAITING,
    }


def step(value: Step) -> dict[str, Any]:
    return {
        "id": value.id,
        "runId": value.run_id,
        "name": value.name,
        "index": value.index,
        "status": value.status.value,
        "output": value.output,
        "error": value.error,
        "startedAt": iso(value.started_at),
        "completedAt": iso(value.completed_at),
    }


def attempt(value: StepAttempt) -> dict[str, Any]:
    return {
        "id": value.id,
        "runId": value.run_id,
        "stepName": value.step_name,
        "stepIndex": value.step_index,
        "runAttempt": value.run_attempt,
        "leaseGeneration": value.lease_generation,
        "status": value.status.value,
        "error": value.error,
        "traceback": value.traceback,
        "startedAt": iso(value.started_at),
        "completedAt": iso(value.completed_at),
    }


def log(value: LogEntry) -> dict[str, Any]:
    return {
        "id": value.id,
        "runId": value.run_id,
        "stepName": value.step_name,
        "level": value.level.value,
        "message": value.message,
        "data": value.data,
        "createdAt": iso(value.created_at),
    }


def worker(value: WorkerInfo) -> dict[str, Any]:
    return {
        "id": value.id,
        "host": value.host,
        "pid": value.pid,
        "engine": value.engine,
        "startedAt": iso(value.started_at),
        "lastHeartbeatAt": iso(value.last_heartbeat_at),
        "isStale": value.is_stale,
    }


def stats(value: QueueStats, jobs: list[str]) -> dict[str, Any]:
    return {
        "pending": value.pending,
        "running": value.running,
        "stale": value.stale,
        "waiting": value.waiting,
        "oldestPendingAgeMs": _ms(value.oldest_pending_age),
        "jobs": jobs,
    }


def schedule(value: Schedule) -> dict[str, Any]:
    return {
        "name": value.name,
        "jobName": value.job_name,
        "cron": value.cron,
        "everyMs": _ms(value.every),
        "timezone": value.timezone,
        "input": value.input,
        "labels": dict(value.labels),
        "catchUp": value.catch_up,
        "paused": value.paused,
        "lastTick": iso(value.last_tick),
        "nextTick": iso(value.next_tick),
        "createdAt": iso(value.created_at),
        "updatedAt": iso(value.updated_at),
    }


def wait(value: Wait) -> dict[str, Any]:
    """A durable wait, as TS's ``DurableWait`` (its timings in milliseconds)."""
    return {
        "id": value.id,
        "runId": value.run_id,
        "name": value.name,
        "kind": value.kind,
        "status": value.status.value,
        "metadata": value.metadata,
        "payload": value.payload,
        "signalId": value.signal_id,
        "deadlineAt": iso(value.deadline_at),
        "createdAt": iso(value.created_at),
        "suspendedAt": iso(value.suspended_at),
        "resolvedAt": iso(value.resolved_at),
        "resumedAt": iso(value.resumed_at),
        "inputWaitMs": _ms(value.input_wait),
        "slotWaitMs": _ms(value.slot_wait),
    }


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else round(value.total_seconds() * 1000)


def event(value: Event) -> dict[str, Any]:
    """An event as ``/subscribe`` streams it: TS's payload for its type."""
    data: dict[str, Any] = {
        "type": value.type.value,
        "runId": value.run_id,
        "jobName": value.job_name,
        "labels": dict(value.labels),
    }
    data.update(_EVENT_FIELDS.get(value.type, _none)(value))
    data["timestamp"] = iso(value.timestamp)
    data["sequence"] = value.sequence
    return data


def list_event(value: Event) -> dict[str, Any]:
    """An event as ``/runs/subscribe`` streams it: TS's reduced projection, no output or error
    of the run, no timestamp or sequence."""
    data: dict[str, Any] = {
        "type": value.type.value,
        "runId": value.run_id,
        "jobName": value.job_name,
        "labels": dict(value.labels),
    }
    if value.type in _LIST_FIELDS:
        data.update(_EVENT_FIELDS[value.type](value))
    if value.type is EventType.STEP_COMPLETE:
        data.pop("output", None)
        data.pop("duration", None)
    return data


def _none(_: Event) -> dict[str, Any]:
    return {}


def _duration(value: Event) -> int | None:
    return None if value.duration is None else round(value.duration * 1000)


def _step_fields(value: Event) -> dict[str, Any]:
    return {"stepName": value.step_name, "stepIndex": value.step_index}


_EVENT_FIELDS: dict[EventType, Any] = {
    EventType.RUN_TRIGGER: lambda e: {"input": e.input},
    EventType.RUN_COALESCED: lambda e: {
        "skippedInput": e.skipped_input,
        "skippedLabels": dict(e.skipped_labels or {}),
    },
    EventType.RUN_LEASED: lambda e: {
        "input": e.input,
        "leaseOwner": e.lease_owner,
        "leaseExpiresAt": iso(e.lease_expires_at),
    },
    EventType.RUN_COMPLETE: lambda e: {"output": e.output, "duration": _duration(e)},
    EventType.RUN_FAIL: lambda e: {"error": e.error, "failedStepName": e.failed_step_name},
    EventType.RUN_RETRY_SCHEDULED: lambda e: {
        "error": e.error,
        "attempt": e.attempt,
        "runAt": iso(e.run_at),
    },
    EventType.RUN_PROGRESS: lambda e: {"progress": progress(e.progress)},
    EventType.STEP_START: _step_fields,
    EventType.STEP_COMPLETE: lambda e: {
        **_step_fields(e),
        "output": e.output,
        "duration": _duration(e),
    },
    EventType.STEP_FAIL: lambda e: {**_step_fields(e), "error": e.error},
    EventType.STEP_CANCEL: _step_fields,
    EventType.LOG_WRITE: lambda e: {
        "stepName": e.step_name,
        "level": e.level,
        "message": e.message,
        "data": e.data,
    },
}
_LIST_FIELDS = frozenset(
    {
        EventType.RUN_COALESCED,
        EventType.RUN_PROGRESS,
        EventType.RUN_RETRY_SCHEDULED,
        EventType.STEP_START,
        EventType.STEP_COMPLETE,
        EventType.STEP_FAIL,
        EventType.STEP_CANCEL,
        EventType.LOG_WRITE,
    }
)
