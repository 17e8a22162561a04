"""Retries with backoff: a failed run resumes at its failed step after a delay, on both engines
and every driver; step-level policies; what a user sees meanwhile (events, Run fields)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from durably import Durably, Retry, RunFailedError, RunStatus, StepContext, ValidationError
from tests.behaviour.recording import record_events

pytestmark = pytest.mark.both_engines

WAIT = 30.0
QUICK = Retry(max_attempts=3, initial_delay=0.05, jitter=False)


def _flaky(
    calls: Counter[str], name: str, failures: int, error: type[Exception] = ValueError
) -> Any:
    """A step function that raises ``failures`` times, then returns its call count."""

    def fn() -> int:
        calls[name] += 1
        if calls[name] <= failures:
            raise error(f"{name} failed ({calls[name]})")
        return calls[name]

    return fn


def test_a_failed_run_is_retried_from_its_failed_step_and_completes(durably: Durably) -> None:
    calls: Counter[str] = Counter()
    scheduled = record_events(durably, "run:retry-scheduled")
    failed = record_events(durably, "run:fail")

    @durably.job("flaky", retry=QUICK)
    def flaky(step: StepContext, _input: None) -> int:
        step.run("first", _flaky(calls, "first", 0))
        return step.run("second", _flaky(calls, "second", 2))

    run = flaky.trigger(None)
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)

    assert done.status == RunStatus.COMPLETED
    assert done.output == 3
    assert calls == {"first": 1, "second": 3}, "completed steps replay, they do not run again"
    assert done.attempt == 3
    assert [(e.attempt, e.error) for e in scheduled] == [
        (2, "ValueError: second failed (1)"),
        (3, "ValueError: second failed (2)"),
    ]
    assert all(e.run_at is not None and e.run_at.utcoffset() is not None for e in scheduled)
    assert failed == []


def test_a_run_that_keeps_failing_fails_after_max_attempts(durably: Durably) -> None:
    calls: Counter[str] = Counter()
    failed = record_events(durably, "run:fail")

    @durably.job("hopeless", retry=Retry(max_attempts=2, initial_delay=0.01, jitter=False))
    def hopeless(step: StepContext, _input: None) -> None:
        step.run("boom", _flaky(calls, "boom", 99))

    run = hopeless.trigger(None)
    durably.start()
    with pytest.raises(RunFailedError, match=r"boom failed \(2\)"):
        durably.wait_for_run(run.id, timeout=WAIT)

    assert calls["boom"] == 2
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (stored.status, stored.attempt) == (RunStatus.FAILED, 2)
    deadline = time.monotonic() + WAIT  # the event follows the stored failure
    while not failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.run_id for e in failed] == [run.id]
    assert [r.id for r in durably.get_runs(status="failed")] == [run.id]


def test_only_the_exceptions_of_retry_on_are_retried(durably: Durably) -> None:
    calls: Counter[str] = Counter()
    policy = Retry(max_attempts=5, initial_delay=0.01, retry_on=(KeyError,))

    @durably.job("picky", retry=policy)
    def picky(step: StepContext, _input: None) -> None:
        step.run("boom", _flaky(calls, "boom", 99, ValueError))

    run = picky.trigger(None)
    assert durably.process_one()
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (stored.status, stored.attempt) == (RunStatus.FAILED, 1)
    assert calls["boom"] == 1


def test_a_step_policy_retries_that_step_in_a_job_without_one(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("step-policy")
    def step_policy(step: StepContext, _input: None) -> int:
        step.run("once", _flaky(calls, "once", 0))
        return step.run("twice-failing", _flaky(calls, "twice-failing", 2), retry=QUICK)

    run = step_policy.trigger(None)
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)
    assert (done.output, done.attempt) == (3, 3)
    assert calls == {"once": 1, "twice-failing": 3}


def test_a_step_policy_overrides_the_jobs_for_that_step(durably: Durably) -> None:
    calls: Counter[str] = Counter()
    generous = Retry(max_attempts=10, initial_delay=0.01, jitter=False)
    strict = Retry(max_attempts=2, initial_delay=0.01, jitter=False)

    @durably.job("two-policies", retry=generous)
    def two_policies(step: StepContext, _input: None) -> None:
        step.run("strict", _flaky(calls, "strict", 99), retry=strict)

    run = two_policies.trigger(None)
    durably.start()
    with pytest.raises(RunFailedError):
        durably.wait_for_run(run.id, timeout=WAIT)
    assert calls["strict"] == 2, "the step's own two attempts, not the job's ten"


def test_a_failure_outside_any_step_is_retried_under_the_jobs_policy(durably: Durably) -> None:
    attempts: list[int] = []

    @durably.job("outside", retry=QUICK)
    def outside(step: StepContext, _input: None) -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 2:
            raise RuntimeError("not yet")
        return "ok"

    run = outside.trigger(None)
    durably.start()
    assert durably.wait_for_run(run.id, timeout=WAIT).output == "ok"
    assert attempts == [1, 2]


def test_backoff_delays_grow_between_attempts(durably: Durably) -> None:
    started: list[float] = []
    policy = Retry(max_attempts=3, initial_delay=0.3, backoff=2.0, jitter=False)

    @durably.job("backoff", retry=policy)
    def backoff(step: StepContext, _input: None) -> None:
        def attempt() -> None:
            started.append(time.monotonic())
            raise ValueError("again")

        step.run("attempt", attempt)

    run = backoff.trigger(None)
    durably.start()
    with pytest.raises(RunFailedError):
        durably.wait_for_run(run.id, timeout=WAIT)
    first_wait, second_wait = started[1] - started[0], started[2] - started[1]
    assert first_wait >= 0.3
    assert second_wait >= 0.6


def test_a_run_waiting_for_its_retry_is_pending_and_holds_no_slot(
    make_durably: Any,
) -> None:
    durably: Durably = make_durably(max_concurrent_runs=1)
    waiting = Retry(max_attempts=2, initial_delay=60.0, jitter=False)

    @durably.job("fails-once", retry=waiting)
    def fails_once(step: StepContext, _input: None) -> None:
        step.run("boom", _flaky(Counter(), "boom", 1))

    @durably.job("quick")
    def quick(step: StepContext, _input: None) -> str:
        return "done"

    failing = fails_once.trigger(None)
    durably.start()
    deadline = time.monotonic() + WAIT
    while (current := durably.get_run(failing.id)) is not None and current.attempt < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    other = quick.trigger(None)
    assert durably.wait_for_run(other.id, timeout=WAIT).output == "done"

    waiting_run = durably.get_run(failing.id)
    assert waiting_run is not None
    assert (waiting_run.status, waiting_run.lease_owner) == (RunStatus.PENDING, None)
    assert waiting_run.error == "ValueError: boom failed (1)"
    assert waiting_run.run_at.timestamp() > time.time() + 50


def test_a_manual_retry_starts_a_fresh_count_of_attempts(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("manual", retry=Retry(max_attempts=2, initial_delay=0.01, jitter=False))
    def manual(step: StepContext, _input: None) -> int:
        return step.run("boom", _flaky(calls, "boom", 3))

    run = manual.trigger(None)
    durably.start()
    with pytest.raises(RunFailedError):
        durably.wait_for_run(run.id, timeout=WAIT)
    retried = durably.retry(run.id)
    assert (retried.status, retried.attempt) == (RunStatus.PENDING, 1)
    assert durably.wait_for_run(run.id, timeout=WAIT).output == 4
    assert calls["boom"] == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": 3}, "durably.Retry"),
        ({"retry": Retry}, "durably.Retry"),
        ({"priority": "high"}, "priority"),
        ({"queue": ""}, "queue"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_bad_job_options_are_refused(
    durably: Durably, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        durably.job("bad", **options)
    assert durably.get_job("bad") is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"initial_delay": -1.0},
        {"backoff": 0.5},
        {"max_delay": float("inf")},
        {"retry_on": ("ValueError",)},
    ],
)
def test_bad_retry_policies_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Retry(**options)


def test_retry_delays_follow_the_documented_formula() -> None:
    policy = Retry(initial_delay=1.0, backoff=2.0, max_delay=5.0, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 10)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = Retry(initial_delay=1.0, backoff=2.0, max_delay=5.0)
    assert all(2.0 <= jittered.delay(3) <= 4.0 for _ in range(200))
    assert Retry(retry_on=KeyError).retry_on == (KeyError,)
