"""Faults the tests put in durably's way: a held write lock, a step write that fails."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from durably import DatabaseLockedError
from durably.core.lease_service import LeaseService
from durably.core.operation import Operation
from durably.storage import Database


@contextmanager
def held_by_another_process(
    script: str, *args: str, ready: str, timeout: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` in a new interpreter until it prints ``ready``: it holds something now.

    On leaving, the script is sent a line (a script that holds until it reads
    one lets go then; one that holds for a set time need not read it) and
    waited for, up to ``timeout`` seconds, then killed.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        said = holder.stdout.readline().strip()
        assert said == ready, f"the holding process said {said!r}, not {ready!r}"
        yield holder
    finally:
        try:
            holder.communicate("\n", timeout=timeout)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()


def hold_write_lock(db: Database) -> tuple[threading.Thread, threading.Event]:
    """A ``db.write`` that keeps durably's write lock until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold(_conn: object) -> None:
        holding.set()
        assert release.wait(10)

    thread = threading.Thread(target=db.write, args=(hold,), daemon=True)
    thread.start()
    assert holding.wait(10)
    return thread, release


def refuse_first_step_write(service: LeaseService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first step result write raises as when the lock outlives ``lock_timeout``.

    Returns the names of the steps whose results were written, in order.
    """
    store = service.persist_step_op
    attempts: list[str] = []

    def locked_once(lease: Any, *args: Any, **kwargs: Any) -> Operation[bool]:
        attempts.append(kwargs["name"])
        if len(attempts) == 1:
            raise DatabaseLockedError("The database stayed locked for more than 30s")
        return (yield from store(lease, *args, **kwargs))

    monkeypatch.setattr(service, "persist_step_op", locked_once)
    return attempts
