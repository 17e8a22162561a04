"""Flow control: a queue's concurrency and rate limits (``durably.queue``), on both engines and
every driver."""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from durably import Durably, Job, QueueLimits, RunStatus, StepContext, ValidationError, testing

pytestmark = pytest.mark.both_engines

WAIT = 30.0


class Intervals:
    """When each run of a job ran (monotonic start and end), recorded by the job itself."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []

    def most_at_once(self) -> int:
        edges = sorted(
            [(start, 1) for start, _ in self.spans] + [(end, -1) for _, end in self.spans]
        )  # at equal times an end (-1) sorts before a start: touching spans do not overlap
        running = most = 0
        for _, change in edges:
            running += change
            most = max(most, running)
        return most


def _timed(
    durably: Durably, name: str, seconds: float, intervals: Intervals, **options: Any
) -> Job[Any, Any]:
    @durably.job(name, **options)
    def job(step: StepContext, input: Any) -> Any:
        start = time.monotonic()
        time.sleep(seconds)
        with intervals.lock:
            intervals.spans.append((start, time.monotonic()))
        return input

    return job


def _status(durably: Durably, run_id: str) -> RunStatus:
    run = durably.get_run(run_id)
    assert run is not None
    return run.status


def test_concurrency_one_runs_a_queues_runs_one_at_a_time_across_slots(make_durably: Any) -> None:
    durably: Durably = make_durably(max_concurrent_runs=2)
    durably.queue("serial", concurrency=1)
    serial = Intervals()
    one_by_one = _timed(durably, "one-by-one", 0.1, serial, queue="serial")
    runs = one_by_one.batch_trigger(list(range(4)))

    durably.start()
    for run in runs:
        durably.wait_for_run(run.id, timeout=WAIT)

    assert len(serial.spans) == 4
    assert serial.most_at_once() == 1  # two slots would run two at once without the limit


def test_a_full_queue_does_not_block_the_runs_of_another_queue(make_durably: Any) -> None:
    durably: Durably = make_durably(max_concurrent_runs=2)
    durably.queue("narrow", concurrency=1)
    release = threading.Event()

    @durably.job("blocker", queue="narrow")
    def blocker(step: StepContext, input: Any) -> Any:
        release.wait(WAIT)
        return input

    @durably.job("other")
    def other(step: StepContext, input: Any) -> Any:
        return input

    first = blocker.trigger("first")
    waiting = blocker.trigger("waiting")
    later = other.trigger("later")  # after ``waiting`` in claim order

    durably.start()
    try:
        durably.wait_for_run(later.id, timeout=WAIT)
        assert _status(durably, first.id) == RunStatus.LEASED
        assert _status(durably, waiting.id) == RunStatus.PENDING
    finally:
        release.set()
    durably.wait_for_run(waiting.id, timeout=WAIT)


def test_an_expired_lease_holds_no_place_in_a_queue(durably: Durably) -> None:
    durably.queue("single", concurrency=1)
    ran: list[Any] = []

    @durably.job("single-job", queue="single")
    def single(step: StepContext, input: Any) -> Any:
        ran.append(input)
        return input

    held = single.trigger("held")
    single.trigger("next")
    with testing.fake_clock(durably) as clock:
        claimed = testing.claim(durably, "a-worker-that-dies")
        assert claimed is not None
        assert claimed.lease.run_id == held.id
        assert durably.process_one() is False  # the live lease fills the queue
        clock.advance(durably.settings.stale_threshold + 1)
        assert durably.process_until_idle() == 2  # expired: recovered, then the next one
    assert sorted(ran) == ["held", "next"]


def test_a_rate_limited_queue_starts_at_most_count_runs_per_window(make_durably: Any) -> None:
    durably: Durably = make_durably(max_concurrent_runs=3)
    durably.queue("metered", rate_limit=(2, 1.0))
    job = _timed(durably, "metered-job", 0.0, Intervals(), queue="metered")
    runs = job.batch_trigger(["a", "b", "c"])

    durably.start()
    done = [durably.wait_for_run(run.id, timeout=WAIT) for run in runs]

    starts = sorted(run.started_at for run in done if run.started_at is not None)
    assert len(starts) == 3
    assert starts[2] - starts[0] >= timedelta(seconds=1)


def test_a_rate_limited_queue_reopens_as_its_window_slides(durably: Durably) -> None:
    durably.queue("hourly", rate_limit=(2, 3600))
    order: list[Any] = []

    @durably.job("metered", queue="hourly")
    def metered(step: StepContext, input: Any) -> Any:
        order.append(input)
        return input

    @durably.job("plain")
    def plain(step: StepContext, input: Any) -> Any:
        order.append(input)
        return input

    metered.batch_trigger(["m1", "m2", "m3"])
    plain.trigger("p1")
    with testing.fake_clock(durably) as clock:
        assert durably.process_until_idle() == 3
        assert order == ["m1", "m2", "p1"]  # m3 passed over: the queue's window is full
        clock.advance(3599)
        assert durably.process_until_idle() == 0
        clock.advance(1.001)
        assert durably.process_until_idle() == 1
    assert order[-1] == "m3"


def test_a_declaration_returns_its_limits_and_may_be_repeated(durably: Durably) -> None:
    limits = durably.queue("emails", concurrency=3, rate_limit=(10, 60))

    assert limits == QueueLimits("emails", concurrency=3, rate_limit=(10, 60.0))
    assert limits.rate_limit == (10, 60.0)
    assert durably.queue("emails", concurrency=3, rate_limit=(10, 60.0)) == limits
    with pytest.raises(ValidationError, match="already declared"):
        durably.queue("emails", concurrency=4, rate_limit=(10, 60))
    with pytest.raises(ValidationError, match="already declared"):
        durably.queue("emails", concurrency=3)
    assert durably.queue("unlimited") == QueueLimits("unlimited")


BAD_LIMITS: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "queue name"),
    ({"name": 7}, "queue name"),
    ({"name": "q" * 256}, "queue name"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": -1}, "concurrency"),
    ({"concurrency": 1.5}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"concurrency": "2"}, "concurrency"),
    ({"rate_limit": (0, 1.0)}, "rate_limit"),
    ({"rate_limit": (1.5, 1.0)}, "rate_limit"),
    ({"rate_limit": (True, 1.0)}, "rate_limit"),
    ({"rate_limit": (1, 0)}, "rate_limit"),
    ({"rate_limit": (1, -1.0)}, "rate_limit"),
    ({"rate_limit": (1, math.inf)}, "rate_limit"),
    ({"rate_limit": (1, math.nan)}, "rate_limit"),
    ({"rate_limit": (1, True)}, "rate_limit"),
    ({"rate_limit": (1, "1s")}, "rate_limit"),
    ({"rate_limit": (1,)}, "rate_limit"),
    ({"rate_limit": (1, 1.0, 1)}, "rate_limit"),
    ({"rate_limit": "2/s"}, "rate_limit"),
    ({"rate_limit": 2}, "rate_limit"),
]


def test_bad_limits_are_refused_and_declare_nothing(durably: Durably) -> None:
    for bad, message in BAD_LIMITS:
        options = dict(bad)
        name = options.pop("name", "checked")
        with pytest.raises(ValidationError, match=message):
            durably.queue(name, **options)
    # Nothing was declared: other limits for the same queue are accepted.
    assert durably.queue("checked", concurrency=5).concurrency == 5
