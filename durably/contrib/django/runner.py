"""The durably job that runs Django tasks: one job, ``django.tasks``, for every task.

One job rather than one per task function: a task is a module-level
function that exists once its module is imported, and nothing imports every
tasks module in a worker up front. A job per task would leave a worker that
had not imported a module unable to claim that task's runs; with one job
every worker claims every task and imports the function the run names
(``Task.module_path``) when it runs it. The run's input says which task, its
arguments and the backend alias; its queue and priority are the task's; its
label ``django.task`` names the function, to filter runs by task.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ...errors import LeaseLostError

if TYPE_CHECKING:
    from ...app import Durably
    from ...context import StepContext

JOB_NAME = "django.tasks"
TASK_LABEL = "django.task"


def register(durably: Durably) -> None:
    """Register the ``django.tasks`` job on ``durably`` (every project ``Durably`` has it)."""

    def run_django_task(step: StepContext, payload: dict[str, Any]) -> Any:
        return run_task(durably, step, payload)

    durably.job(JOB_NAME)(run_django_task)


def run_task(durably: Durably, step: StepContext, payload: dict[str, Any]) -> Any:
    """Call the task function in a step; send ``task_started`` and ``task_finished``.

    The step records the call: its attempts keep the tracebacks of failures
    and, in their names, the workers (:mod:`.results`). The return value,
    JSON-normalised as Django's backends do, is the run's output.
    """
    from . import results
    from .compat import task_backends, task_finished, task_started

    backend = task_backends[payload["backend"]]
    run = durably.get_run(step.run_id)
    assert run is not None  # this worker holds its lease
    attempts = durably.get_step_attempts(run.id) if results.has_attempts(run) else []
    result = results.task_result(backend, run, attempts)
    started = results.django_time(datetime.now(timezone.utc))
    object.__setattr__(result, "last_attempted_at", started)
    if result.started_at is None:
        object.__setattr__(result, "started_at", started)
    result.worker_ids.append(durably.worker_id)
    task_started.send(sender=type(backend), task_result=result)
    try:
        value = step.run(results.call_step_name(durably.worker_id), lambda: _call(result))
    except LeaseLostError:
        raise  # another worker carries on with the run: it has not finished
    except Exception as exc:
        _finish(result, "FAILED", exc)
        task_finished.send(sender=type(backend), task_result=result)
        raise
    _finish(result, "SUCCESSFUL", None)
    object.__setattr__(result, "_return_value", value)
    task_finished.send(sender=type(backend), task_result=result)
    return value


def _call(result: Any) -> Any:
    """Call the task as Django's own backends do, between fresh database connections."""
    from django.db import close_old_connections

    from .compat import TaskContext, normalize_json

    task = result.task
    close_old_connections()
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        return normalize_json(value)
    finally:
        close_old_connections()


def _finish(result: Any, status: str, exc: BaseException | None) -> None:
    import traceback

    from . import results
    from .compat import TaskError, TaskResultStatus

    object.__setattr__(result, "status", TaskResultStatus[status])
    object.__setattr__(result, "finished_at", results.django_time(datetime.now(timezone.utc)))
    if exc is not None:
        cls = type(exc)
        result.errors.append(
            TaskError(
                exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )
