"""Steps: outputs, recording, failure, resume from storage, progress, logs, context."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

import pytest

from durably import Durably, StepContext
from durably.models import Progress
from durably.status import LogLevel, RunStatus, StepStatus

pytestmark = pytest.mark.both_engines

WAIT = 10.0
"""Seconds a test waits for something that should happen at once (only reached on failure)."""


def _run_one(durably: Durably, run_id: str) -> Any:
    """Execute the next run in this thread and return the stored run."""
    assert durably.process_one()
    run = durably.get_run(run_id)
    assert run is not None
    return run


def test_step_return_value_flows_into_output(durably: Durably) -> None:
    @durably.job("compute")
    def compute(step: StepContext, input: dict[str, int]) -> dict[str, int]:
        value = step.run("double", lambda: input["n"] * 2)
        return {"result": value}

    run = compute.trigger({"n": 21})
    done = _run_one(durably, run.id)

    assert done.status == RunStatus.COMPLETED
    assert done.output == {"result": 42}


def test_steps_recorded_in_order_with_name_index_status_output(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(preserve_steps=True)

    @durably.job("two-steps")
    def two_steps(step: StepContext, input: None) -> str:
        first = step.run("first", lambda: {"a": 1})
        second = step.run("second", lambda: [first["a"], 2])
        return f"{first['a']}-{second[1]}"

    run = two_steps.trigger(None)
    assert _run_one(durably, run.id).status == RunStatus.COMPLETED

    steps = durably.get_steps(run.id)
    assert [(s.name, s.index, s.status, s.output) for s in steps] == [
        ("first", 0, StepStatus.COMPLETED, {"a": 1}),
        ("second", 1, StepStatus.COMPLETED, [1, 2]),
    ]
    assert all(s.run_id == run.id and s.completed_at is not None for s in steps)


def test_completed_run_drops_steps_and_logs_by_default(durably: Durably) -> None:
    seen_mid_run: dict[str, int] = {}

    @durably.job("cleanup")
    def cleanup(step: StepContext, input: None) -> str:
        step.run("only", lambda: "value")
        step.log.info("written")
        seen_mid_run["steps"] = len(durably.get_steps(step.run_id))
        seen_mid_run["logs"] = len(durably.get_logs(step.run_id))
        return "done"

    run = cleanup.trigger(None)
    assert _run_one(durably, run.id).status == RunStatus.COMPLETED

    assert seen_mid_run == {"steps": 1, "logs": 1}, "steps and logs are stored while running"
    assert durably.get_steps(run.id) == []
    assert durably.get_logs(run.id) == []


def test_throwing_step_fails_the_run_and_records_a_failed_step(durably: Durably) -> None:
    @durably.job("explodes")
    def explodes(step: StepContext, input: None) -> None:
        def boom() -> None:
            raise ValueError("the step blew up")

        step.run("boom", boom)

    run = explodes.trigger(None)
    failed = _run_one(durably, run.id)

    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert "the step blew up" in failed.error
    steps = durably.get_steps(run.id)
    assert len(steps) == 1
    assert steps[0].name == "boom"
    assert steps[0].status == StepStatus.FAILED
    assert steps[0].error is not None
    assert "the step blew up" in steps[0].error


def test_retry_resumes_from_the_failed_step_without_rerunning_completed_ones(
    durably: Durably,
) -> None:
    calls: Counter[str] = Counter()

    @durably.job("resumable")
    def resumable(step: StepContext, input: None) -> dict[str, str]:
        def step1() -> str:
            calls["step1"] += 1
            return f"computed-call-{calls['step1']}"

        def step2() -> str:
            calls["step2"] += 1
            if calls["step2"] == 1:
                raise RuntimeError("transient failure")
            return "step2-ok"

        first = step.run("step1", step1)
        second = step.run("step2", step2)
        return {"first": first, "second": second}

    run = resumable.trigger(None)
    failed = _run_one(durably, run.id)
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert "transient failure" in failed.error

    retried = durably.retry(run.id)
    assert retried.id == run.id
    assert retried.status == RunStatus.PENDING

    done = _run_one(durably, run.id)
    assert done.status == RunStatus.COMPLETED
    assert calls == Counter({"step1": 1, "step2": 2})
    assert done.output == {"first": "computed-call-1", "second": "step2-ok"}


def test_step_value_is_the_same_value_of_the_same_type_first_time_and_on_replay(
    durably: Durably,
) -> None:
    seen: list[Any] = []
    attempts: Counter[str] = Counter()

    @durably.job("round-trip")
    def round_trip(step: StepContext, input: None) -> Any:
        value = step.run("pair", lambda: (1, ("nested", 2), {date(2026, 12, 6)}))
        seen.append(value)

        def flaky() -> None:
            attempts["flaky"] += 1
            if attempts["flaky"] == 1:
                raise RuntimeError("fail once")

        step.run("flaky", flaky)
        return value

    run = round_trip.trigger(None)
    assert _run_one(durably, run.id).status == RunStatus.FAILED
    durably.retry(run.id)
    done = _run_one(durably, run.id)

    assert done.status == RunStatus.COMPLETED
    expected = (1, ("nested", 2), {date(2026, 12, 6)})
    assert seen == [expected, expected]
    assert all(type(value) is tuple and type(value[1]) is tuple for value in seen)
    assert done.output == expected


def test_a_runs_input_and_output_keep_their_types(durably: Durably) -> None:
    when = datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)

    @durably.job("typed")
    def typed(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
        assert type(input["when"]) is datetime
        return {"pair": input["pair"], "day": step.run("day", lambda: input["when"].date())}

    run = typed.trigger({"when": when, "pair": (1, 2)})
    assert run.input == {"when": when, "pair": (1, 2)}
    done = _run_one(durably, run.id)
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"pair": (1, 2), "day": date(2026, 12, 6)}
    stored = durably.get_run(run.id)
    assert stored is not None
    assert type(stored.output["pair"]) is tuple


def test_a_step_output_durably_cannot_store_fails_the_step_and_the_run(durably: Durably) -> None:
    @durably.job("unserialisable")
    def unserialisable(step: StepContext, input: None) -> None:
        step.run("opaque", lambda: object())

    run = unserialisable.trigger(None)
    failed = _run_one(durably, run.id)

    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert "a object (builtins:object) is not a value durably stores" in failed.error
    assert "opaque" in failed.error
    steps = durably.get_steps(run.id)
    assert [(s.name, s.status) for s in steps] == [("opaque", StepStatus.FAILED)]


def test_progress_is_persisted_and_visible_mid_run(durably: Durably) -> None:
    reported = threading.Event()
    release = threading.Event()

    @durably.job("slow-progress")
    def slow_progress(step: StepContext, input: None) -> str:
        step.progress(1, 3, "first third")
        reported.set()
        release.wait(WAIT)
        step.progress(3, 3)
        return "done"

    run = slow_progress.trigger(None)
    durably.start()
    try:
        assert reported.wait(WAIT)
        mid = durably.get_run(run.id)
        assert mid is not None
        assert mid.status == RunStatus.LEASED
        assert mid.progress == Progress(current=1, total=3, message="first third")
    finally:
        release.set()
    done = durably.wait_for_run(run.id, timeout=WAIT)
    assert done.progress == Progress(current=3, total=3, message=None)


def test_step_logs_are_persisted_with_level_message_data_and_step_name(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(preserve_steps=True)

    @durably.job("chatty")
    def chatty(step: StepContext, input: None) -> None:
        step.log.info("before", {"k": 1})

        def inside() -> int:
            step.log.warn("inside", {"n": [1, 2]})
            return 1

        step.run("work", inside)
        step.log.error("after")

    run = chatty.trigger(None)
    assert _run_one(durably, run.id).status == RunStatus.COMPLETED

    logs = durably.get_logs(run.id)
    assert [(e.level, e.message, e.data, e.step_name) for e in logs] == [
        (LogLevel.INFO, "before", {"k": 1}, None),
        (LogLevel.WARN, "inside", {"n": [1, 2]}, "work"),
        (LogLevel.ERROR, "after", None, None),
    ]
    assert all(e.run_id == run.id for e in logs)


def test_duplicate_step_name_returns_the_first_steps_value(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("duplicate-names")
    def duplicate_names(step: StepContext, input: None) -> list[str]:
        def make(tag: str) -> Callable[[], str]:
            def fn() -> str:
                calls[tag] += 1
                return tag

            return fn

        return [step.run("same", make("first")), step.run("same", make("second"))]

    run = duplicate_names.trigger(None)
    done = _run_one(durably, run.id)

    assert done.status == RunStatus.COMPLETED
    assert done.output == ["first", "first"]
    assert calls == Counter({"first": 1})


def test_step_context_exposes_run_id_job_name_and_labels(durably: Durably) -> None:
    seen: dict[str, Any] = {}

    @durably.job("introspective")
    def introspective(step: StepContext, input: None) -> None:
        seen.update(run_id=step.run_id, job_name=step.job_name, labels=step.labels)

    run = introspective.trigger(None, labels={"tenant": "acme", "region": "eu-1"})
    assert _run_one(durably, run.id).status == RunStatus.COMPLETED

    assert seen == {
        "run_id": run.id,
        "job_name": "introspective",
        "labels": {"tenant": "acme", "region": "eu-1"},
    }


@pytest.mark.parametrize("level", ["info", "warn", "error"])
def test_each_log_level_is_stored_under_its_name(
    make_durably: Callable[..., Durably], level: str
) -> None:
    durably = make_durably(preserve_steps=True)

    @durably.job("one-log")
    def one_log(step: StepContext, input: None) -> None:
        getattr(step.log, level)("message")

    run = one_log.trigger(None)
    assert _run_one(durably, run.id).status == RunStatus.COMPLETED
    assert [e.level for e in durably.get_logs(run.id)] == [level]
