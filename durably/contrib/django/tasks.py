"""A ``django.tasks`` backend: Django's tasks run as durably runs.

    TASKS = {"default": {"BACKEND": "durably.contrib.django.tasks.DurablyBackend"}}

    @task(priority=10, queue_name="emails")
    def send_welcome(user_id): ...

    result = send_welcome.enqueue(user.pk)      # a durably run of the job "django.tasks"
    send_welcome.get_result(result.id).status   # READY, RUNNING, SUCCESSFUL or FAILED

``manage.py durably_worker`` runs them. Everything a ``Task`` says maps onto
a run: ``queue_name`` is the run's queue (list them in the backend's
``QUEUES``, as for every Django backend), ``priority`` its priority (higher
first, as in Django), ``run_after`` its ``run_at``. ``TaskResult.id`` is the
run's id; its ``status`` follows the run's (:data:`.results.STATUSES`); its
``errors`` carry the traceback of each failed attempt; its return value is
the run's output. ``task_enqueued`` is sent by the process that enqueues,
``task_started`` and ``task_finished`` by the worker that runs the task.
Arguments and return values are JSON, as ``django.tasks`` requires.
With Django before 6, the ``django-tasks`` backport provides ``task`` and
the rest under ``django_tasks``; this backend serves both.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ...app import Durably
from ...jobs import Job
from ...models import Run
from . import results
from .compat import BaseTaskBackend, TaskResultDoesNotExist, normalize_json, task_enqueued
from .conf import get_durably
from .runner import JOB_NAME, TASK_LABEL

__all__ = ["DurablyBackend"]


class DurablyBackend(BaseTaskBackend):  # type: ignore[misc]
    """Enqueues Django tasks as runs of the project's ``Durably`` (:func:`.get_durably`)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    @property
    def durably(self) -> Durably:
        return get_durably()

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Create the run; the returned ``TaskResult`` is ``READY`` with the run's id."""
        self.validate_task(task)
        payload, options = self._trigger(task, args, kwargs)
        return self._enqueued(self._job().trigger(payload, **options))

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """:meth:`enqueue` without blocking the event loop (durably's own async write)."""
        self.validate_task(task)
        payload, options = self._trigger(task, args, kwargs)
        return self._enqueued(await self._job().trigger_async(payload, **options))

    def get_result(self, result_id: str) -> Any:
        """The task's result as it stands; ``TaskResultDoesNotExist`` for an unknown id."""
        durably = self.durably
        run = self._found(durably.get_run(result_id), result_id)
        attempts = durably.get_step_attempts(run.id) if results.has_attempts(run) else []
        return results.task_result(self, run, attempts)

    async def aget_result(self, result_id: str) -> Any:
        """:meth:`get_result` without blocking the event loop."""
        durably = self.durably
        run = self._found(await durably.get_run_async(result_id), result_id)
        attempts = (
            await durably.get_step_attempts_async(run.id) if results.has_attempts(run) else []
        )
        return results.task_result(self, run, attempts)

    def _job(self) -> Job[Any, Any]:
        job = self.durably.get_job(JOB_NAME)
        assert job is not None  # build_durably registers it on every project Durably
        return job

    def _trigger(self, task: Any, args: Any, kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's input and trigger options for ``task(*args, **kwargs)``."""
        payload = {
            "task": task.module_path,
            "args": normalize_json(list(args)),
            "kwargs": normalize_json(dict(kwargs)),
            "backend": self.alias,
            "deferred": task.run_after is not None,
        }
        run_at = task.run_after
        if run_at is not None and timezone.is_naive(run_at):
            run_at = timezone.make_aware(run_at)  # USE_TZ off: a naive time is local time
        options = {
            "queue": task.queue_name,
            "priority": task.priority,
            "run_at": run_at,
            "labels": {TASK_LABEL: task.module_path},
        }
        return payload, options

    def _enqueued(self, run: Run) -> Any:
        result = results.task_result(self, run, [])
        task_enqueued.send(type(self), task_result=result)
        return result

    def _found(self, run: Run | None, result_id: str) -> Run:
        if run is None or run.job_name != JOB_NAME:
            raise TaskResultDoesNotExist(result_id)
        return run
