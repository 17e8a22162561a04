"""The ``django.tasks`` backend in one process: enqueue, run (``process_until_idle``), read back.

The same tests run on Django 5.2 with the django-tasks backport (.venv) and on
Django 6.1 (.venv-django6, see test_django6.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durably import Durably, RunStatus

try:
    import django.tasks as tasks_api
    from django.tasks import signals
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django 5.2: the django-tasks backport
    import django_tasks as tasks_api
    from django_tasks import signals
    from django_tasks.exceptions import TaskResultDoesNotExist

Status = tasks_api.TaskResultStatus


@pytest.fixture
def durably(data_dir: Path) -> Durably:
    from durably.contrib.django import get_durably

    return get_durably()


@pytest.fixture
def tasks(data_dir: Path) -> ModuleType:
    from tests.django.testapp import tasks

    return tasks


def test_the_backend_says_what_it_supports(data_dir: Path) -> None:
    from durably.contrib.django.tasks import DurablyBackend

    backend = tasks_api.task_backends["default"]
    assert isinstance(backend, DurablyBackend)
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority


def test_an_enqueued_task_is_a_durably_run_and_its_result_comes_back(
    durably: Durably, tasks: ModuleType
) -> None:
    result = tasks.echo.enqueue(1, "two", [3, 4], {"five": None}, six=6.5)

    assert result.status == Status.READY
    assert result.enqueued_at is not None
    run = durably.get_run(result.id)
    assert run is not None
    assert run.job_name == "django.tasks"
    assert run.labels["django.task"] == "tests.django.testapp.tasks.echo"
    assert tasks.echo.get_result(result.id).status == Status.READY

    assert durably.process_until_idle() >= 1
    done = tasks.echo.get_result(result.id)
    assert done.status == Status.SUCCESSFUL
    assert done.is_finished
    assert done.args == [1, "two", [3, 4], {"five": None}]
    assert done.kwargs == {"six": 6.5}
    assert done.return_value == {"args": [1, "two", [3, 4], {"five": None}], "kwargs": {"six": 6.5}}
    assert done.worker_ids == [durably.worker_id]
    assert done.attempts == 1
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at >= done.enqueued_at
    result.refresh()
    assert result.status == Status.SUCCESSFUL


def test_a_failed_task_has_its_exception_and_traceback(durably: Durably, tasks: ModuleType) -> None:
    result = tasks.refuse.enqueue("out of stock")
    durably.process_until_idle()

    failed = tasks.refuse.get_result(result.id)
    assert failed.status == Status.FAILED
    assert durably.get_run(result.id).status == RunStatus.FAILED  # type: ignore[union-attr]
    [error] = failed.errors
    assert error.exception_class is tasks.RefusedError
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "raise RefusedError(reason)" in error.traceback
    assert "RefusedError: out of stock" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = failed.return_value


def test_an_unknown_id_does_not_exist(durably: Durably, tasks: ModuleType) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.echo.get_result("01M0000000000000000000NONE")
    other = durably.get_job("testapp-double").trigger(21)  # type: ignore[union-attr]
    with pytest.raises(TaskResultDoesNotExist):  # a run, but not of a task
        tasks_api.default_task_backend.get_result(other.id)
    durably.process_until_idle()
    assert durably.get_run(other.id).output == 42  # type: ignore[union-attr]


def test_higher_priority_tasks_run_first(durably: Durably, tasks: ModuleType) -> None:
    tasks.calls.clear()
    tasks.record.using(priority=-10).enqueue("low")
    tasks.record.enqueue("normal")
    tasks.record.using(priority=50).enqueue("high")
    durably.process_until_idle()
    assert tasks.calls == ["high", "normal", "low"]


def test_a_deferred_task_waits_for_its_time(durably: Durably, tasks: ModuleType) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    result = tasks.echo.using(run_after=later).enqueue("later")
    durably.process_until_idle()

    waiting = tasks.echo.get_result(result.id)
    assert waiting.status == Status.READY
    assert waiting.task.run_after == later.replace(microsecond=later.microsecond // 1000 * 1000)
    durably.cancel(result.id)
    assert tasks.echo.get_result(result.id).status == Status.FAILED


def test_the_queue_is_the_runs_queue(durably: Durably, tasks: ModuleType) -> None:
    result = tasks.record.enqueue("queued")
    assert durably.get_run(result.id).queue == "ordered"  # type: ignore[union-attr]
    assert tasks.record.get_result(result.id).task.queue_name == "ordered"
    assert durably.process_until_idle(queues=["default"]) == 0
    assert durably.process_until_idle(queues=["ordered"]) == 1


def test_async_tasks_and_the_async_api(durably: Durably, tasks: ModuleType) -> None:
    async def main() -> Any:
        result = await tasks.add_async.aenqueue(2, 3)
        await durably.process_until_idle_async()
        return await tasks.add_async.aget_result(result.id)

    done = asyncio.run(main())
    assert done.status == Status.SUCCESSFUL
    assert done.return_value == 5


def test_a_task_that_takes_context_gets_its_result_and_attempt(
    durably: Durably, tasks: ModuleType
) -> None:
    result = tasks.introduce.enqueue("hello")
    durably.process_until_idle()
    done = tasks.introduce.get_result(result.id)
    assert done.return_value == {"greeting": "hello", "id": result.id, "attempt": 1}


@pytest.fixture
def received() -> Iterator[Callable[[str], list[Any]]]:
    """What each of task_enqueued, task_started and task_finished was sent."""
    seen: dict[str, list[Any]] = {"enqueued": [], "started": [], "finished": []}
    receivers = {}
    for name, found in seen.items():

        def receiver(sender: Any, task_result: Any, found: list[Any] = found, **_: Any) -> None:
            found.append((sender, task_result.id, task_result.status))

        receivers[name] = receiver
        getattr(signals, f"task_{name}").connect(receiver)
    yield seen.__getitem__
    for name, receiver in receivers.items():
        getattr(signals, f"task_{name}").disconnect(receiver)


def test_the_signals_are_sent_with_the_result(
    durably: Durably, tasks: ModuleType, received: Callable[[str], list[Any]]
) -> None:
    from durably.contrib.django.tasks import DurablyBackend

    ok = tasks.echo.enqueue("signalled")
    failed = tasks.refuse.enqueue("no")
    durably.process_until_idle()

    assert received("enqueued") == [
        (DurablyBackend, ok.id, Status.READY),
        (DurablyBackend, failed.id, Status.READY),
    ]
    assert received("started") == [
        (DurablyBackend, ok.id, Status.RUNNING),
        (DurablyBackend, failed.id, Status.RUNNING),
    ]
    assert received("finished") == [
        (DurablyBackend, ok.id, Status.SUCCESSFUL),
        (DurablyBackend, failed.id, Status.FAILED),
    ]


def test_without_use_tz_times_are_naive_local_times(durably: Durably, tasks: ModuleType) -> None:
    from django.test import override_settings
    from django.utils import timezone

    with override_settings(USE_TZ=False):
        later = datetime.now() + timedelta(hours=2)
        result = tasks.echo.using(run_after=later).enqueue("naive")
        waiting = tasks.echo.get_result(result.id)
        assert timezone.is_naive(waiting.enqueued_at)
        assert waiting.task.run_after == later.replace(microsecond=later.microsecond // 1000 * 1000)
    aware = tasks.echo.get_result(result.id).task.run_after
    assert aware == timezone.make_aware(later).replace(microsecond=later.microsecond // 1000 * 1000)
    durably.cancel(result.id)
