"""A durably run read as a Django ``TaskResult``: statuses, times, errors, workers.

One run of the ``django.tasks`` job is one ``TaskResult``; its id is the
run's id. Each time a worker calls the task function it does so in a step
named after itself (:func:`call_step_name`), so the run's step attempts,
which durably keeps with their tracebacks even after the run succeeds, say
which workers ran the task and how each failed attempt failed. (A call is
written when it ends, or by its worker's next heartbeat while it runs: a
worker killed before that left no trace to list.)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from ...errors import ValidationError
from ...models import Run, StepAttempt
from ...status import RunStatus, StepAttemptStatus
from .compat import Task, TaskError, TaskResult, TaskResultStatus

CALL_STEP_PREFIX = "task on "

STATUSES = {
    RunStatus.PENDING: TaskResultStatus.READY,
    RunStatus.LEASED: TaskResultStatus.RUNNING,
    # Asleep between attempts of its own steps: nothing runs it now, it will
    # be run again; Django has no word for it but "ready to be executed again".
    RunStatus.WAITING: TaskResultStatus.READY,
    RunStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    RunStatus.FAILED: TaskResultStatus.FAILED,
    # Django's FAILED covers "was unable to start"; a cancelled task never finished.
    RunStatus.CANCELLED: TaskResultStatus.FAILED,
}
"""durably's run statuses (durably.status) as Django's ``TaskResultStatus``."""


def call_step_name(worker_id: str) -> str:
    """The step a worker calls the task function in: its name records the worker."""
    return f"{CALL_STEP_PREFIX}{worker_id}"


def has_attempts(run: Run) -> bool:
    """Whether the run may have step attempts: not for a run no worker has claimed yet."""
    return not (run.status is RunStatus.PENDING and run.attempt == 1 and not run.recovery_count)


def task_result(backend: Any, run: Run, attempts: Sequence[StepAttempt]) -> Any:
    """The ``TaskResult`` of ``run`` (of the ``django.tasks`` job) for ``backend``."""
    payload = run.input
    calls = [attempt for attempt in attempts if attempt.step_name.startswith(CALL_STEP_PREFIX)]
    result = TaskResult(
        task=_task(backend, run),
        id=run.id,
        status=STATUSES[run.status],
        enqueued_at=django_time(run.created_at),
        started_at=django_time(run.started_at),
        finished_at=django_time(run.completed_at) if run.is_terminal else None,
        last_attempted_at=django_time(calls[-1].started_at if calls else run.started_at),
        args=payload["args"],
        kwargs=payload["kwargs"],
        backend=backend.alias,
        errors=[_error(attempt) for attempt in calls if attempt.status is StepAttemptStatus.FAILED],
        worker_ids=[attempt.step_name[len(CALL_STEP_PREFIX) :] for attempt in calls],
    )
    if run.status is RunStatus.COMPLETED:
        object.__setattr__(result, "_return_value", run.output)
    return result


def django_time(moment: datetime | None) -> datetime | None:
    """durably's aware UTC times as Django shows them: naive local time when ``USE_TZ`` is off."""
    if moment is None or settings.USE_TZ:
        return moment
    naive: datetime = timezone.make_naive(moment)
    return naive


def _task(backend: Any, run: Run) -> Any:
    """The task the run was enqueued for, with the options it was enqueued with."""
    payload = run.input
    found = import_string(payload["task"])
    if not isinstance(found, Task):
        raise ValidationError(f"{payload['task']} is not a task (made with @task)")
    return dataclasses.replace(
        found,
        priority=run.priority,
        queue_name=run.queue,
        backend=backend.alias,
        run_after=django_time(run.run_at) if payload["deferred"] else None,
    )


def _error(attempt: StepAttempt) -> Any:
    traceback = attempt.traceback or attempt.error or ""
    return TaskError(exception_class_path=exception_path(attempt), traceback=traceback)


def exception_path(attempt: StepAttempt) -> str:
    """The dotted path of the exception a failed attempt raised, read from its traceback.

    The attempt's ``error`` names the class (``"Type: message"``); the
    traceback's last lines name it with its module, as Python prints
    exceptions of every module but ``builtins``.
    """
    name = (attempt.error or "Exception").partition(":")[0].strip()
    qualified = re.compile(rf"^((?:\w+\.)+){re.escape(name)}(?::|$)")
    for line in reversed((attempt.traceback or "").splitlines()):
        found = qualified.match(line)
        if found:
            return f"{found.group(1)}{name}"
    return f"builtins.{name}"
