"""Tasks for the backend's tests: each one shows one part of the contract."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

calls: list[str] = []
"""Names passed to ``record``, in the order this process ran them."""


class RefusedError(Exception):
    pass


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}


@task
def refuse(reason: str) -> None:
    raise RefusedError(reason)


@task(queue_name="ordered")
def record(name: str) -> str:
    calls.append(name)
    return name


@task
async def add_async(a: int, b: int) -> int:
    return a + b


@task
def stall_once(marker: str) -> str:
    """Hang the first time (until the worker is killed); return the second time."""
    path = Path(marker)
    if not path.exists():
        path.write_text("started")
        time.sleep(120)
    return "finished by the next worker"


@task(takes_context=True)
def introduce(context: Any, greeting: str) -> dict[str, Any]:
    return {"greeting": greeting, "id": context.task_result.id, "attempt": context.attempt}
