"""Delayed runs, priorities and queues, on both engines and every driver."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durably import Durably, Job, RunStatus, StepContext, TriggerItem, ValidationError, testing

pytestmark = pytest.mark.both_engines

WAIT = 30.0


def _recording(durably: Durably, name: str, order: list[Any], **options: Any) -> Job[Any, Any]:
    @durably.job(name, **options)
    def job(step: StepContext, input: Any) -> Any:
        order.append(input)
        return input

    return job


def test_a_delayed_run_is_pending_and_not_claimed_before_its_time(durably: Durably) -> None:
    job = _recording(durably, "later", [])
    with testing.fake_clock(durably) as clock:  # no real pause may make it due early
        run = job.trigger("x", delay=0.4)

        assert run.status == RunStatus.PENDING
        assert run.run_at - run.created_at == timedelta(seconds=0.4)
        assert run.run_at.utcoffset() == timedelta(0)
        assert durably.process_one() is False
        clock.advance(0.399)
        assert durably.process_one() is False
        clock.advance(0.001)
        assert durably.process_one() is True
    assert durably.get_run(run.id).status == RunStatus.COMPLETED  # type: ignore[union-attr]


def test_run_at_and_timedelta_delays_are_honoured(durably: Durably) -> None:
    order: list[Any] = []
    job = _recording(durably, "at", order)
    with testing.fake_clock(durably) as clock:  # no real pause may make them due early
        soon = datetime.fromtimestamp(clock.now / 1000, timezone.utc) + timedelta(seconds=0.3)
        at = job.trigger("run_at", run_at=soon)
        delta = job.trigger("delta", delay=timedelta(milliseconds=300))
        now = job.trigger("now")

        assert abs((at.run_at - soon).total_seconds()) < 0.002
        assert durably.process_until_idle() == 1
        assert order == ["now"]
        clock.advance(0.299)
        assert durably.process_until_idle() == 0
        clock.advance(0.001)
        assert durably.process_until_idle() == 2
    assert sorted(order[1:]) == ["delta", "run_at"]
    assert durably.get_run(now.id).run_at == now.created_at  # type: ignore[union-attr]
    assert delta.run_at > delta.created_at


def test_an_idle_worker_wakes_when_a_delayed_run_comes_due(make_durably: Any) -> None:
    # The polling interval is far longer than the delay: the worker must wake
    # for the run's time, not find it at its next poll.
    durably: Durably = make_durably(polling_interval=30.0)
    job = _recording(durably, "wake", [])
    durably.start()
    time.sleep(0.1)  # the worker has polled and gone idle
    started = time.monotonic()
    run = job.trigger("x", delay=0.3)
    durably.wait_for_run(run.id, timeout=WAIT)
    assert time.monotonic() - started < 10.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": 1, "run_at": datetime.now(timezone.utc)}, "not both"),
        ({"run_at": datetime(2030, 1, 1)}, "aware"),
        ({"run_at": "2030-01-01"}, "datetime"),
        ({"delay": -1}, "non-negative"),
        ({"delay": "soon"}, "delay"),
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"queue": ""}, "queue"),
        ({"queue": 7}, "queue"),
    ],
)
def test_bad_timing_options_are_refused_and_nothing_is_stored(
    durably: Durably, options: dict[str, Any], message: str
) -> None:
    job = _recording(durably, "strict", [])
    with pytest.raises(ValidationError, match=message):
        job.trigger("x", **options)
    with pytest.raises(ValidationError, match=message):
        job.batch_trigger(["ok", TriggerItem("bad", **options)])
    assert durably.get_runs() == []


def test_higher_priorities_run_first_and_equal_ones_in_order(durably: Durably) -> None:
    order: list[Any] = []
    job = _recording(durably, "prio", order)
    job.trigger("low-1")
    job.trigger("high-1", priority=10)
    job.trigger("mid", priority=5)
    job.trigger("high-2", priority=10)
    job.trigger("low-2")
    job.trigger("negative", priority=-3)

    assert durably.process_until_idle() == 6
    assert order == ["high-1", "high-2", "mid", "low-1", "low-2", "negative"]


def test_a_jobs_priority_is_its_runs_default(durably: Durably) -> None:
    order: list[Any] = []
    urgent = _recording(durably, "urgent", order, priority=100)
    normal = _recording(durably, "normal", order)
    normal.trigger("normal")
    urgent.trigger("urgent")
    urgent.trigger("demoted", priority=0)
    normal.batch_trigger([TriggerItem("promoted", priority=200)])

    assert durably.process_until_idle() == 4
    assert order == ["promoted", "urgent", "normal", "demoted"]
    assert [r.priority for r in durably.get_runs()] == [200, 0, 100, 0]


def test_process_one_takes_only_the_queues_it_is_given(durably: Durably) -> None:
    order: list[Any] = []
    emails = _recording(durably, "emails", order, queue="emails")
    reports = _recording(durably, "reports", order)
    mail = emails.trigger("mail")
    report = reports.trigger("report")
    moved = reports.trigger("moved", queue="emails")

    assert (mail.queue, report.queue, moved.queue) == ("emails", "default", "emails")
    assert durably.process_one(queues=["nothing-here"]) is False
    assert durably.process_until_idle(queues=["emails"]) == 2
    assert order == ["mail", "moved"]
    assert durably.process_until_idle(queues=["default"]) == 1
    assert order[-1] == "report"


def test_a_worker_serves_only_its_queues(make_durably: Any) -> None:
    durably: Durably = make_durably()
    order: list[Any] = []
    fast = _recording(durably, "fast", order, queue="fast")
    slow = _recording(durably, "slow", order, queue="slow")
    waiting = slow.trigger("slow")
    done = fast.trigger("fast")

    durably.start(queues=["fast"])
    durably.wait_for_run(done.id, timeout=WAIT)
    time.sleep(0.2)  # several polls
    assert durably.get_run(waiting.id).status == RunStatus.PENDING  # type: ignore[union-attr]
    durably.stop()

    durably.start()  # by default: every queue
    durably.wait_for_run(waiting.id, timeout=WAIT)
    assert order == ["fast", "slow"]


def test_queues_must_be_a_list_of_names(durably: Durably) -> None:
    with pytest.raises(ValidationError, match="not a string"):
        durably.process_one(queues="emails")
    with pytest.raises(ValidationError, match="at least one"):
        durably.process_one(queues=[])


def test_a_fake_clock_makes_delayed_runs_due_without_waiting(durably: Durably) -> None:
    order: list[Any] = []
    job = _recording(durably, "tomorrow", order)
    with testing.fake_clock(durably) as clock:
        run = job.trigger("x", delay=timedelta(days=1))
        assert durably.process_until_idle() == 0
        clock.advance(timedelta(hours=23).total_seconds())
        assert durably.process_until_idle() == 0
        clock.advance(timedelta(hours=1).total_seconds())
        assert durably.process_until_idle() == 1
    assert order == ["x"]
    assert durably.get_run(run.id).status == RunStatus.COMPLETED  # type: ignore[union-attr]
