"""Job timeouts (``@durably.job(..., timeout=)``): an attempt past its deadline fails with
``RunTimeoutError`` and is retried under the job's policy; an ``async def`` job is cancelled,
a ``def`` job is fenced off and nothing it stores after the deadline is kept. Both engines,
every driver."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from durably import (
    AsyncStepContext,
    Durably,
    Retry,
    RunFailedError,
    RunStatus,
    RunTimeoutError,
    StepContext,
    StepStatus,
)
from tests.behaviour.recording import record_events

pytestmark = pytest.mark.both_engines

WAIT = 30.0
TIMEOUT = 0.3
TIMED_OUT = "RunTimeoutError: Run exceeded its timeout of 0.3s"


def _completed_steps(durably: Durably, run_id: str) -> dict[str, object]:
    return {
        step.name: step.output
        for step in durably.get_steps(run_id)
        if step.status == StepStatus.COMPLETED
    }


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- async def jobs -------------------------------------------------------------


def test_an_async_job_past_its_timeout_is_cancelled_and_fails(durably: Durably) -> None:
    cancelled = threading.Event()
    failed = record_events(durably, "run:fail")

    async def forever() -> str:
        try:
            await asyncio.sleep(WAIT * 2)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    @durably.job("hangs", timeout=TIMEOUT)
    async def hangs(step: AsyncStepContext, _input: None) -> str:
        await step.run("quick", lambda: "done")
        return await step.run("slow", forever)

    run = hangs.trigger(None)
    started = time.monotonic()
    durably.start()
    with pytest.raises(RunFailedError, match=TIMED_OUT):
        durably.wait_for_run(run.id, timeout=WAIT)

    assert time.monotonic() - started >= TIMEOUT, "not before its deadline"
    assert cancelled.wait(WAIT), "the awaiting step is cancelled"
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (stored.status, stored.error) == (RunStatus.FAILED, TIMED_OUT)
    assert _completed_steps(durably, run.id) == {"quick": "done"}, "slow is not recorded"
    _wait_until(lambda: bool(failed))  # emitted just after the failure is stored
    assert [(e.run_id, e.error) for e in failed] == [(run.id, TIMED_OUT)]


def test_a_timed_out_async_attempt_is_retried_and_the_next_one_completes(
    durably: Durably,
) -> None:
    attempts: Counter[str] = Counter()
    scheduled = record_events(durably, "run:retry-scheduled")

    async def work() -> str:
        attempts["work"] += 1
        if attempts["work"] == 1:
            await asyncio.sleep(WAIT * 2)
        return f"attempt {attempts['work']}"

    @durably.job(
        "slow-once",
        timeout=TIMEOUT,
        retry=Retry(max_attempts=2, initial_delay=0.01, jitter=False),
    )
    async def slow_once(step: AsyncStepContext, _input: None) -> str:
        return await step.run("work", work)

    run = slow_once.trigger(None)
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)

    assert (done.status, done.output, done.attempt) == (RunStatus.COMPLETED, "attempt 2", 2)
    assert [(e.attempt, e.error) for e in scheduled] == [(2, TIMED_OUT)]


# -- def jobs ---------------------------------------------------------------------


class Blocked:
    """A ``def`` step function that sleeps until the test releases it, then returns."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.job_ended = threading.Event()
        """The job function itself returned or raised, in its own thread."""

    def __call__(self) -> str:
        self.entered.set()
        self.release.wait(WAIT * 2)
        return "late"


@pytest.fixture
def blocked() -> Iterator[Blocked]:
    step = Blocked()
    yield step
    step.release.set()


def test_a_def_job_past_its_timeout_fails_while_its_function_goes_on(
    durably: Durably, blocked: Blocked
) -> None:
    failed = record_events(durably, "run:fail")

    @durably.job("stuck", timeout=TIMEOUT)
    def stuck(step: StepContext, _input: None) -> str:
        try:
            step.run("quick", lambda: "done")
            return step.run("slow", blocked)
        finally:
            blocked.job_ended.set()

    run = stuck.trigger(None)
    started = time.monotonic()
    durably.start()
    with pytest.raises(RunFailedError, match=TIMED_OUT):
        durably.wait_for_run(run.id, timeout=WAIT)
    assert time.monotonic() - started >= TIMEOUT, "not before its deadline"
    assert not blocked.job_ended.is_set(), "the run failed while its function still ran"
    failed_run = durably.get_run(run.id)

    blocked.release.set()  # the function returns now: nothing it stores is kept
    assert blocked.job_ended.wait(WAIT)
    assert durably.get_run(run.id) == failed_run
    assert failed_run is not None
    assert (failed_run.status, failed_run.error, failed_run.output) == (
        RunStatus.FAILED,
        TIMED_OUT,
        None,
    )
    assert _completed_steps(durably, run.id) == {"quick": "done"}, "slow is not recorded"
    _wait_until(lambda: bool(failed))  # emitted just after the failure is stored
    assert [(e.run_id, e.error) for e in failed] == [(run.id, TIMED_OUT)]


def test_a_def_job_learns_of_its_deadline_at_its_next_step(durably: Durably) -> None:
    seen: dict[str, object] = {}
    ended = threading.Event()

    @durably.job("patient", timeout=TIMEOUT)
    def patient(step: StepContext, _input: None) -> str:
        try:
            seen["woken"] = step.wait(WAIT)  # wakes at the deadline
            seen["cancelled"] = step.cancelled
            return step.run("after", lambda: "too late")
        except Exception as exc:
            seen["raised"] = exc
            raise
        finally:
            ended.set()

    run = patient.trigger(None)
    durably.start()
    with pytest.raises(RunFailedError, match=TIMED_OUT):
        durably.wait_for_run(run.id, timeout=WAIT)
    assert ended.wait(WAIT)
    assert (seen["woken"], seen["cancelled"]) == (True, True)
    assert isinstance(seen["raised"], RunTimeoutError)
    assert str(seen["raised"]) == "Run exceeded its timeout of 0.3s"
    assert _completed_steps(durably, run.id) == {}


def test_a_timed_out_def_attempt_is_retried_and_its_late_result_is_refused(
    make_durably: Callable[..., Durably], blocked: Blocked
) -> None:
    durably = make_durably(preserve_steps=True)
    calls: Counter[str] = Counter()

    def work() -> str:
        calls["work"] += 1
        return blocked() if calls["work"] == 1 else "second"

    @durably.job(
        "stuck-once",
        timeout=TIMEOUT,
        retry=Retry(max_attempts=2, initial_delay=0.01, jitter=False),
    )
    def stuck_once(step: StepContext, _input: None) -> str:
        calls["attempt"] += 1
        attempt = calls["attempt"]
        try:
            return step.run("work", work)
        finally:
            if attempt == 1:
                blocked.job_ended.set()

    run = stuck_once.trigger(None)
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)
    assert (done.status, done.output, done.attempt) == (RunStatus.COMPLETED, "second", 2)
    assert not blocked.job_ended.is_set(), "attempt 1 is still running"

    blocked.release.set()
    assert blocked.job_ended.wait(WAIT)
    after = durably.get_run(run.id)
    assert after is not None
    assert (after.status, after.output) == (RunStatus.COMPLETED, "second")
    assert [(s.name, s.status, s.output) for s in durably.get_steps(run.id)] == [
        ("work", StepStatus.COMPLETED, "second")
    ]


def test_a_late_step_result_is_refused_while_the_run_still_holds_its_key(
    durably: Durably, blocked: Blocked
) -> None:
    """Beside a pending run of its concurrency key, a run waiting for its retry stays leased
    until then: only the timed-out attempt's fence keeps its late step result out."""

    @durably.job(
        "keyed",
        timeout=TIMEOUT,
        retry=Retry(max_attempts=2, initial_delay=WAIT * 2, jitter=False),
    )
    def keyed(step: StepContext, _input: None) -> str:
        try:
            return step.run("slow", blocked)
        finally:
            blocked.job_ended.set()

    first = keyed.trigger(None, concurrency_key="account-7")
    durably.start()
    assert blocked.entered.wait(WAIT)
    keyed.trigger(None, concurrency_key="account-7")  # pending behind the first
    _wait_until(lambda: (durably.get_run(first.id) or first).attempt == 2)

    blocked.release.set()
    assert blocked.job_ended.wait(WAIT)
    waiting = durably.get_run(first.id)
    assert waiting is not None
    assert (waiting.attempt, waiting.error) == (2, TIMED_OUT)
    assert _completed_steps(durably, first.id) == {}, "the late result would be replayed"


def test_process_one_returns_at_the_deadline_of_a_stuck_def_job(
    durably: Durably, blocked: Blocked
) -> None:
    @durably.job("stuck", timeout=TIMEOUT)
    def stuck(step: StepContext, _input: None) -> str:
        try:
            return step.run("slow", blocked)
        finally:
            blocked.job_ended.set()

    run = stuck.trigger(None)
    assert durably.process_one()
    assert not blocked.job_ended.is_set(), "process_one returned while the function still ran"
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (stored.status, stored.error) == (RunStatus.FAILED, TIMED_OUT)


# -- within the timeout -----------------------------------------------------------


def test_a_job_that_ends_within_its_timeout_is_unaffected(durably: Durably) -> None:
    retried = record_events(durably, "run:retry-scheduled")

    @durably.job("quick-def", timeout=WAIT)
    def quick_def(step: StepContext, input: int) -> int:
        return step.run("double", lambda: input * 2) + 1

    @durably.job("quick-async", timeout=WAIT)
    async def quick_async(step: AsyncStepContext, input: int) -> int:
        async def double() -> int:
            await asyncio.sleep(0.01)
            return input * 2

        return await step.run("double", double) + 1

    @durably.job("failing", timeout=WAIT)
    def failing(_step: StepContext, _input: None) -> None:
        raise ValueError("its own error")

    runs = [quick_def.trigger(20), quick_async.trigger(40), failing.trigger(None)]
    durably.start()
    assert durably.wait_for_run(runs[0].id, timeout=WAIT).output == 41
    assert durably.wait_for_run(runs[1].id, timeout=WAIT).output == 81
    with pytest.raises(RunFailedError, match="ValueError: its own error"):
        durably.wait_for_run(runs[2].id, timeout=WAIT)
    assert retried == []
