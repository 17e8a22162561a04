"""Events: order, envelope (sequence, timestamp), listeners, error isolation and payloads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durably import (
    ConflictError,
    Durably,
    Event,
    EventType,
    Job,
    Progress,
    StepContext,
    ValidationError,
)

pytestmark = pytest.mark.both_engines

MakeDurably = Callable[..., Durably]

DOMAIN = {
    "run:trigger",
    "run:coalesced",
    "run:complete",
    "run:fail",
    "run:retry-scheduled",
    "run:waiting",
    "run:cancel",
    "run:delete",
}
OPERATIONAL = {
    "run:leased",
    "run:lease-renewed",
    "run:progress",
    "step:start",
    "step:complete",
    "step:fail",
    "step:cancel",
    "log:write",
    "wait:prepared",
    "wait:signalled",
    "wait:timed-out",
    "worker:error",
}


@pytest.fixture
def durably(make_durably: MakeDurably) -> Durably:
    # A heartbeat far slower than any test keeps "run:lease-renewed" from another
    # thread out of the recorded sequences, so every assertion here is deterministic.
    return make_durably(heartbeat_interval=10.0, stale_threshold=30.0)


def two_steps(step: StepContext, input: Any) -> Any:
    a = step.run("fetch", lambda: {"n": input["n"]})
    step.progress(1, 2, "fetched")
    b = step.run("save", lambda: a["n"] * 2)
    return {"saved": b}


def failing(step: StepContext, input: Any) -> Any:
    step.run("ok", lambda: 1)
    step.run("explode", lambda: _raise(input["message"]))
    return None


def _raise(message: str) -> None:
    raise RuntimeError(message)


def recorder(durably: Durably, event_type: str | None = None) -> list[Event]:
    events: list[Event] = []
    durably.on(event_type, events.append)
    return events


def types(events: list[Event], *, ignore: tuple[str, ...] = ()) -> list[str]:
    return [e.type.value for e in events if e.type.value not in ignore]


def run_job(durably: Durably, job: Job[Any, Any], input: Any, **options: Any) -> str:
    run = job.trigger(input, **options)
    assert durably.process_one()
    return run.id


# -- order and envelope ---------------------------------------------------------


def test_event_order_for_a_successful_run(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    events = recorder(durably)

    run_id = run_job(durably, job, {"n": 21})

    assert types(events) == [
        "run:trigger",
        "run:leased",
        "step:start",
        "step:complete",
        "run:progress",
        "step:start",
        "step:complete",
        "run:complete",
    ]
    assert {e.run_id for e in events} == {run_id}
    assert {e.job_name for e in events} == {"two-steps"}
    assert durably.get_run(run_id).status == "completed"  # type: ignore[union-attr]


def test_sequence_strictly_increases_and_timestamps_are_aware(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    events = recorder(durably)
    before = datetime.now(timezone.utc)

    run_job(durably, job, {"n": 1})
    run_job(durably, job, {"n": 2})

    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(events)))
    assert sequences[0] >= 1
    for event in events:
        assert event.timestamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= event.timestamp
        assert event.timestamp <= datetime.now(timezone.utc) + timedelta(seconds=1)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)


def test_sequence_counts_events_nobody_listens_to(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    completes = recorder(durably, "run:complete")

    run_job(durably, job, {"n": 1})
    run_job(durably, job, {"n": 2})

    first, second = (e.sequence for e in completes)
    assert second - first == 8  # one run's full sequence of events (see test above)


def test_triggers_nobody_listens_to_are_numbered_as_if_heard(durably: Durably) -> None:
    """With no trigger listener the events of a batch are not made; they are still counted."""
    job = durably.job("two-steps")(two_steps)
    cancels = recorder(durably, "run:cancel")
    marker = job.trigger({"n": 0})
    durably.cancel(marker.id)

    pending = job.trigger({"n": 1}, concurrency_key="k")
    job.batch_trigger([{"n": 2}, {"n": 3}, {"n": 4}])  # three run:trigger
    job.trigger({"n": 5}, concurrency_key="k", coalesce="skip")  # one run:coalesced
    job.trigger({"n": 6}, idempotency_key="i")  # one run:trigger
    job.trigger({"n": 7}, idempotency_key="i")  # returns the run above: no event
    durably.cancel(pending.id)

    first, second = (e.sequence for e in cancels)
    assert second - first == 7  # run:trigger of `pending`, 3 + 1 + 1 + 0, then the cancel


# -- listeners ----------------------------------------------------------------


def test_multiple_listeners_are_all_called_in_order(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    calls: list[str] = []
    durably.on("run:trigger", lambda e: calls.append("first"))
    durably.on("run:trigger", lambda e: calls.append("second"))
    durably.on(EventType.RUN_TRIGGER, lambda e: calls.append("third"))

    job.trigger({"n": 1})

    assert calls == ["first", "second", "third"]


def test_listener_only_receives_its_type(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    starts = recorder(durably, "step:start")

    run_job(durably, job, {"n": 1})

    assert [(e.type, e.step_name, e.step_index) for e in starts] == [
        (EventType.STEP_START, "fetch", 0),
        (EventType.STEP_START, "save", 1),
    ]


def test_catch_all_listener_receives_every_event(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    everything = recorder(durably, None)
    per_type: dict[str, list[Event]] = {}
    for name in ("run:trigger", "run:leased", "step:start", "step:complete", "run:complete"):
        per_type[name] = recorder(durably, name)

    run_job(durably, job, {"n": 1})

    for name, received in per_type.items():
        assert received == [e for e in everything if e.type == name]
    assert "run:progress" in types(everything)


def test_unsubscribe_stops_delivery(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    kept: list[Event] = []
    dropped: list[Event] = []
    all_dropped: list[Event] = []
    durably.on("run:trigger", kept.append)
    unsubscribe = durably.on("run:trigger", dropped.append)
    unsubscribe_all = durably.on(None, all_dropped.append)

    job.trigger({"n": 1})
    unsubscribe()
    unsubscribe_all()
    unsubscribe()  # a second call is harmless
    job.trigger({"n": 2})

    assert len(kept) == 2
    assert len(dropped) == 1
    assert types(all_dropped) == ["run:trigger"]


def test_unsubscribe_removes_only_its_own_listener(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    a: list[Event] = []
    b: list[Event] = []
    unsubscribe_a = durably.on("run:trigger", a.append)
    durably.on("run:trigger", b.append)

    unsubscribe_a()
    job.trigger({"n": 1})

    assert (len(a), len(b)) == (0, 1)


@pytest.mark.parametrize("name", ["run:start", "run:retry", "RUN:TRIGGER", "", "trigger"])
def test_unknown_event_type_is_rejected(durably: Durably, name: str) -> None:
    with pytest.raises(ValidationError):
        durably.on(name, lambda event: None)


# -- listener errors --------------------------------------------------------------


def _explode(event: Event) -> None:
    raise RuntimeError(f"listener failed on {event.type}")


def test_raising_listener_breaks_neither_other_listeners_nor_the_run(
    durably: Durably, caplog: pytest.LogCaptureFixture
) -> None:
    job = durably.job("two-steps")(two_steps)
    durably.on(None, _explode)
    durably.on("step:start", _explode)
    after = recorder(durably)
    caplog.set_level(logging.ERROR, logger="durably")

    run_id = run_job(durably, job, {"n": 5})

    run = durably.get_run(run_id)
    assert run is not None
    assert run.status == "completed"
    assert run.output == {"saved": 10}
    assert types(after)[-1] == "run:complete"
    assert len(after) == 8
    assert "listener failed" in caplog.text  # reported, not swallowed silently


def test_listener_errors_go_to_on_error(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    reported: list[tuple[BaseException, Event]] = []
    durably.on_error(lambda exc, event: reported.append((exc, event)))
    durably.on("run:complete", _explode)
    durably.on("run:trigger", _explode)

    run_id = run_job(durably, job, {"n": 1})

    assert [(str(exc), event.type.value, event.run_id) for exc, event in reported] == [
        ("listener failed on run:trigger", "run:trigger", run_id),
        ("listener failed on run:complete", "run:complete", run_id),
    ]
    assert all(isinstance(exc, RuntimeError) for exc, _ in reported)
    assert durably.get_run(run_id).status == "completed"  # type: ignore[union-attr]


def test_raising_on_error_handler_is_contained(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    durably.on_error(lambda exc, event: _raise("handler broke too"))
    durably.on("step:complete", _explode)

    run_id = run_job(durably, job, {"n": 1})

    assert durably.get_run(run_id).status == "completed"  # type: ignore[union-attr]


def test_trigger_succeeds_when_run_trigger_listener_raises(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    durably.on("run:trigger", _explode)

    run = job.trigger({"n": 1})

    assert durably.get_run(run.id) is not None


# -- payloads -----------------------------------------------------------------------


def test_run_trigger_leased_and_complete_payloads(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    events = recorder(durably)

    run_job(durably, job, {"n": 3}, labels={"team": "a"})

    by_type = {e.type.value: e for e in events}
    trigger = by_type["run:trigger"]
    assert (trigger.input, dict(trigger.labels)) == ({"n": 3}, {"team": "a"})
    leased = by_type["run:leased"]
    assert leased.input == {"n": 3}
    assert leased.lease_owner == durably.worker_id
    assert leased.lease_expires_at is not None
    assert leased.lease_expires_at.utcoffset() == timedelta(0)
    assert leased.lease_expires_at > leased.timestamp
    complete = by_type["run:complete"]
    assert complete.output == {"saved": 6}
    assert complete.duration is not None
    assert complete.duration >= 0
    assert all(dict(e.labels) == {"team": "a"} for e in events)


def test_step_complete_payload(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    completes = recorder(durably, "step:complete")

    run_job(durably, job, {"n": 4})

    assert [(e.step_name, e.step_index, e.output) for e in completes] == [
        ("fetch", 0, {"n": 4}),
        ("save", 1, 8),
    ]
    assert all(e.duration is not None and e.duration >= 0 for e in completes)


def test_run_fail_and_step_fail_payloads(durably: Durably) -> None:
    job = durably.job("failing")(failing)
    events = recorder(durably)

    run_id = run_job(durably, job, {"message": "it broke"})

    assert types(events) == [
        "run:trigger",
        "run:leased",
        "step:start",
        "step:complete",
        "step:start",
        "step:fail",
        "run:fail",
    ]
    step_fail, run_fail = events[-2], events[-1]
    assert step_fail.step_name == "explode"
    assert step_fail.step_index == 1
    assert "it broke" in (step_fail.error or "")
    assert run_fail.run_id == run_id
    assert "it broke" in (run_fail.error or "")
    assert run_fail.failed_step_name == "explode"
    assert "step:cancel" not in types(events)


def test_run_fail_outside_a_step_has_no_failed_step_name(durably: Durably) -> None:
    @durably.job("fails-outside")
    def fails_outside(step: StepContext, input: Any) -> Any:
        step.run("ok", lambda: 1)
        raise KeyError("missing thing")

    fails = recorder(durably, "run:fail")

    run_job(durably, fails_outside, None)

    assert len(fails) == 1
    assert "missing thing" in (fails[0].error or "")
    assert fails[0].failed_step_name is None


def test_log_write_step_name_follows_the_current_step(make_durably: MakeDurably) -> None:
    durably = make_durably(preserve_steps=True, heartbeat_interval=10.0, stale_threshold=30.0)

    @durably.job("logging")
    def logging_job(step: StepContext, input: Any) -> Any:
        step.log.info("before")

        def inside() -> int:
            step.log.warn("inside", {"k": [1, 2]})
            return 1

        step.run("work", inside)
        step.log.error("after", {"done": True})
        return None

    logs = recorder(durably, "log:write")

    run_id = run_job(durably, logging_job, None)

    assert [(e.step_name, e.level, e.message, e.data) for e in logs] == [
        (None, "info", "before", None),
        ("work", "warn", "inside", {"k": [1, 2]}),
        (None, "error", "after", {"done": True}),
    ]
    assert {e.run_id for e in logs} == {run_id}
    stored = durably.get_logs(run_id)
    assert [(e.step_name, e.level, e.message, e.data) for e in stored] == [
        (None, "info", "before", None),
        ("work", "warn", "inside", {"k": [1, 2]}),
        (None, "error", "after", {"done": True}),
    ]


def test_run_progress_payloads(durably: Durably) -> None:
    @durably.job("progress")
    def progress_job(step: StepContext, input: Any) -> Any:
        step.progress(1)
        step.progress(2, 3)
        step.progress(3, 3, "done")
        return None

    events = recorder(durably, "run:progress")

    run_id = run_job(durably, progress_job, None)

    assert [e.progress for e in events] == [
        Progress(1),
        Progress(2, 3),
        Progress(3, 3, "done"),
    ]
    assert {e.run_id for e in events} == {run_id}
    assert durably.get_run(run_id).progress == Progress(3, 3, "done")  # type: ignore[union-attr]


def test_run_cancel_and_run_delete_events(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    events = recorder(durably)
    run = job.trigger({"n": 1}, labels={"tenant": "t1"})

    durably.cancel(run.id)
    durably.delete_run(run.id)

    assert types(events) == ["run:trigger", "run:cancel", "run:delete"]
    for event in events[1:]:
        assert (event.run_id, event.job_name, dict(event.labels)) == (
            run.id,
            "two-steps",
            {"tenant": "t1"},
        )


def test_purge_emits_no_delete_events(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    run_job(durably, job, {"n": 1})
    deletes = recorder(durably, "run:delete")

    assert durably.purge_runs(older_than=datetime.now(timezone.utc) + timedelta(minutes=1)) == 1
    assert deletes == []


def test_failed_cancel_emits_nothing(durably: Durably) -> None:
    job = durably.job("two-steps")(two_steps)
    run_id = run_job(durably, job, {"n": 1})
    events = recorder(durably)

    with pytest.raises(ConflictError):
        durably.cancel(run_id)

    assert events == []


# -- domain events ---------------------------------------------------------------------


def test_event_types_are_partitioned_into_domain_and_operational() -> None:
    assert {t.value for t in EventType} == DOMAIN | OPERATIONAL
    assert len(DOMAIN) == 8
    assert len(OPERATIONAL) == 12


@pytest.mark.parametrize("event_type", sorted(DOMAIN | OPERATIONAL))
def test_event_is_domain(event_type: str) -> None:
    event = Event(type=EventType(event_type))

    assert event.is_domain is (event_type in DOMAIN)
    assert str(event.type) == event_type
