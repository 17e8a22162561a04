"""The serverless primitives: process_one and process_until_idle."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from durably import Durably, StepContext, ValidationError
from durably.status import RunStatus

pytestmark = pytest.mark.both_engines

WAIT = 10.0


def _recording_job(durably: Durably, executed: list[Any], lock: threading.Lock) -> Any:
    @durably.job("record")
    def record(step: StepContext, input: int) -> int:
        value = step.run("echo", lambda: input)
        with lock:
            executed.append(value)
        return value * 10

    return record


def test_process_one_returns_false_on_an_empty_queue(durably: Durably) -> None:
    assert durably.process_one() is False
    assert durably.process_until_idle() == 0


def test_process_one_executes_one_run_to_completion(durably: Durably) -> None:
    executed: list[Any] = []
    job = _recording_job(durably, executed, threading.Lock())
    first, second = job.batch_trigger([1, 2])

    assert durably.process_one() is True

    done = durably.get_run(first.id)
    assert done is not None
    assert (done.status, done.output) == (RunStatus.COMPLETED, 10)
    waiting = durably.get_run(second.id)
    assert waiting is not None
    assert waiting.status == RunStatus.PENDING
    assert executed == [1]


def test_process_until_idle_respects_max_runs(durably: Durably) -> None:
    executed: list[Any] = []
    job = _recording_job(durably, executed, threading.Lock())
    runs = job.batch_trigger([1, 2, 3])

    assert durably.process_until_idle(max_runs=2) == 2
    assert executed == [1, 2]
    statuses = [durably.get_run(run.id).status for run in runs]  # type: ignore[union-attr]
    assert statuses == [RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.PENDING]

    assert durably.process_until_idle(max_runs=2) == 1
    assert executed == [1, 2, 3]
    assert durably.process_until_idle() == 0


@pytest.mark.parametrize("max_runs", [-1, 1.5, "2"])
def test_process_until_idle_rejects_bad_max_runs(durably: Durably, max_runs: Any) -> None:
    with pytest.raises(ValidationError):
        durably.process_until_idle(max_runs=max_runs)


def test_two_instances_draining_one_queue_execute_every_run_once(
    make_durably: Callable[..., Durably],
) -> None:
    first = make_durably()
    second = make_durably()
    executed: list[Any] = []
    lock = threading.Lock()
    job = _recording_job(first, executed, lock)
    _recording_job(second, executed, lock)
    runs = job.batch_trigger(list(range(8)))

    start = threading.Barrier(2, timeout=WAIT)
    counts: dict[str, int] = {}
    errors: list[BaseException] = []

    def drain(name: str, durably: Durably) -> None:
        try:
            start.wait()
            counts[name] = durably.process_until_idle()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=drain, args=(name, instance))
        for name, instance in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)

    assert errors == []
    assert sum(counts.values()) == 8
    assert Counter(executed) == Counter(range(8))
    for run in runs:
        done = first.get_run(run.id)
        assert done is not None
        assert (done.status, done.output) == (RunStatus.COMPLETED, run.input * 10)
