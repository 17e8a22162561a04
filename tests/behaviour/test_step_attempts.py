"""Step attempts: every call of a step's function, kept with how it ended, on both engines and
every driver (``Durably.get_step_attempts``)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durably import (
    AsyncStepContext,
    CancelledError,
    Durably,
    Retry,
    RunFailedError,
    RunStatus,
    StepAttempt,
    StepAttemptStatus,
    StepContext,
    testing,
)

pytestmark = pytest.mark.both_engines

WAIT = 30.0
"""Seconds a test waits for something that should happen soon (only reached on failure)."""
RETRY_ONCE = Retry(max_attempts=2, initial_delay=0.01)

STARTED, COMPLETED, FAILED, INTERRUPTED = (
    StepAttemptStatus.STARTED,
    StepAttemptStatus.COMPLETED,
    StepAttemptStatus.FAILED,
    StepAttemptStatus.INTERRUPTED,
)


def _summary(attempts: list[StepAttempt]) -> list[tuple[str, int, str, int, int]]:
    return [
        (a.step_name, a.step_index, a.status.value, a.run_attempt, a.lease_generation)
        for a in attempts
    ]


def _flaky_def_job(durably: Durably, calls: Counter[str]) -> Any:
    @durably.job("flaky", retry=RETRY_ONCE)
    def flaky(step: StepContext, _input: None) -> str:
        def prepare() -> str:
            calls["prepare"] += 1
            return "ready"

        def call_flaky_api() -> str:
            calls["call_flaky_api"] += 1
            if calls["call_flaky_api"] == 1:
                raise ValueError("the API is down")
            return "answered"

        step.run("prepare", prepare)
        return step.run("call", call_flaky_api)

    return flaky


def _flaky_async_job(durably: Durably, calls: Counter[str]) -> Any:
    @durably.job("flaky", retry=RETRY_ONCE)
    async def flaky(step: AsyncStepContext, _input: None) -> str:
        async def prepare() -> str:
            calls["prepare"] += 1
            return "ready"

        async def call_flaky_api() -> str:
            calls["call_flaky_api"] += 1
            await asyncio.sleep(0)
            if calls["call_flaky_api"] == 1:
                raise ValueError("the API is down")
            return "answered"

        await step.run("prepare", prepare)
        return await step.run("call", call_flaky_api)

    return flaky


@pytest.mark.parametrize("kind", ["def", "async"])
def test_a_retried_step_shows_its_failure_with_traceback_then_its_success(
    durably: Durably, kind: str
) -> None:
    calls: Counter[str] = Counter()
    job = (_flaky_def_job if kind == "def" else _flaky_async_job)(durably, calls)

    run = job.trigger(None)
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)
    assert (done.output, done.attempt) == ("answered", 2)

    attempts = durably.get_step_attempts(run.id)
    # "prepare" completed in the first attempt and was replayed in the second: no new attempt.
    assert _summary(attempts) == [
        ("prepare", 0, "completed", 1, 1),
        ("call", 1, "failed", 1, 1),
        ("call", 1, "completed", 2, 2),
    ]
    assert calls == {"prepare": 1, "call_flaky_api": 2}
    prepared, failed, answered = attempts
    assert failed.error == "ValueError: the API is down"
    assert failed.traceback is not None
    assert failed.traceback.startswith("Traceback (most recent call last):")
    assert "in call_flaky_api" in failed.traceback
    assert failed.traceback.rstrip().endswith("ValueError: the API is down")
    assert (answered.error, answered.traceback) == (None, None)
    assert {a.run_id for a in attempts} == {run.id}
    assert prepared.id < failed.id < answered.id
    for attempt in attempts:
        assert attempt.started_at.utcoffset() == timedelta(0)
        assert attempt.completed_at is not None
        assert attempt.started_at <= attempt.completed_at
    # The completed run's steps are cleaned up (no preserve_steps); its attempts stay.
    assert durably.get_steps(run.id) == []
    assert asyncio.run(durably.get_step_attempts_async(run.id)) == attempts


def test_a_failed_runs_traceback_is_on_its_last_attempt(durably: Durably) -> None:
    def parse(text: str) -> int:
        return int(text)

    @durably.job("parses")
    def parses(step: StepContext, text: str) -> int:
        def parse_input() -> int:
            try:
                return parse(text)
            except ValueError as exc:
                raise RuntimeError("bad input") from exc

        return step.run("parse", parse_input)

    run = parses.trigger("not a number")
    assert durably.process_one()
    with pytest.raises(RunFailedError):
        durably.wait_for_run(run.id, timeout=WAIT)

    [attempt] = durably.get_step_attempts(run.id)
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (attempt.status, attempt.error) == (FAILED, stored.error)
    assert stored.error == "RuntimeError: bad input"
    assert attempt.traceback is not None
    for part in ("in parse_input", "in parse", "ValueError: invalid literal", "RuntimeError"):
        assert part in attempt.traceback, "the whole chain, as Python prints it"


def test_an_unknown_run_has_no_attempts(durably: Durably) -> None:
    assert durably.get_step_attempts("01ARZ3NDEKTSV4RRFFQ69G5FAV") == []


def test_attempts_are_deleted_with_their_run(make_durably: Any) -> None:
    durably: Durably = make_durably(preserve_steps=True)

    @durably.job("two-steps")
    def two_steps(step: StepContext, n: int) -> int:
        step.run("one", lambda: n)
        return step.run("two", lambda: n + 1)

    deleted, purged, kept = (two_steps.trigger(n) for n in range(3))
    assert durably.process_until_idle() == 3
    assert all(len(durably.get_step_attempts(r.id)) == 2 for r in (deleted, purged, kept))

    durably.delete_run(deleted.id)
    assert durably.get_step_attempts(deleted.id) == []
    assert durably.purge_runs(datetime.now(timezone.utc) + timedelta(days=1), limit=1) == 1
    assert durably.get_step_attempts(purged.id) == []
    assert [a.step_name for a in durably.get_step_attempts(kept.id)] == ["one", "two"]


def test_a_step_a_heartbeat_found_running_reads_interrupted_once_its_run_is_taken_over(
    make_durably: Any,
) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: Counter[str] = Counter()

    def define(app: Durably) -> Any:
        @app.job("slow")
        def slow(step: StepContext, _input: None) -> str:
            def work() -> str:
                calls["work"] += 1
                if calls["work"] == 1:  # the first call outlives its worker's lease
                    entered.set()
                    release.wait(WAIT)
                return "done"

            return step.run("work", work)

        return slow

    # A worker whose heartbeats we make by hand; another takes the run over.
    first = make_durably(heartbeat_interval=60.0, stale_threshold=120.0)
    second = make_durably()
    run = define(first).trigger(None)
    define(second)
    first.start()
    try:
        assert entered.wait(WAIT)
        assert first.get_step_attempts(run.id) == []  # nothing written before the step ends
        testing.renew_leases(first)  # a heartbeat finds the step running
        assert _summary(first.get_step_attempts(run.id)) == [("work", 0, "started", 1, 1)]

        testing.expire_lease(first, run.id)
        # Expired, but nobody took the run since: its worker may yet renew and finish.
        assert [a.status for a in first.get_step_attempts(run.id)] == [STARTED]
        second.process_until_idle()
        assert second.wait_for_run(run.id, timeout=WAIT).output == "done"
    finally:
        release.set()
        first.stop()
    attempts = second.get_step_attempts(run.id)
    assert _summary(attempts) == [
        ("work", 0, "interrupted", 1, 1),
        ("work", 0, "completed", 1, 2),
    ]
    assert (attempts[0].completed_at, attempts[0].error) == (None, None)
    assert calls["work"] == 2


def test_a_step_cut_short_by_a_cancel_reads_interrupted(make_durably: Any) -> None:
    # No heartbeat while the step runs: the step is recorded as it is cut off.
    durably = make_durably(heartbeat_interval=60.0, stale_threshold=120.0)
    entered = threading.Event()

    @durably.job("waits")
    def waits(step: StepContext, _input: None) -> None:
        def wait_for_cancel() -> str:
            entered.set()
            step.wait(WAIT)  # wakes at once when the run is cancelled
            return "cut short"

        step.run("wait", wait_for_cancel)

    run = waits.trigger(None)
    durably.start()
    assert entered.wait(WAIT)
    assert durably.get_step_attempts(run.id) == []

    durably.cancel(run.id)
    durably.stop()
    stored = durably.get_run(run.id)
    assert stored is not None
    assert stored.status is RunStatus.CANCELLED
    [attempt] = durably.get_step_attempts(run.id)
    assert (attempt.status, attempt.completed_at) == (INTERRUPTED, None)


def test_a_step_whose_result_is_refused_reads_interrupted(make_durably: Any) -> None:
    # Cancelled by another process while the step ran, and no heartbeat here
    # noticed: the step's result is refused, and its attempt is kept as cut off.
    worker = make_durably(heartbeat_interval=60.0, stale_threshold=120.0)
    elsewhere = make_durably()
    entered, release = threading.Event(), threading.Event()

    @worker.job("slow")
    def slow(step: StepContext, _input: None) -> str:
        def work() -> str:
            entered.set()
            release.wait(WAIT)
            return "done"

        return step.run("work", work)

    run = slow.trigger(None)
    worker.start()
    try:
        assert entered.wait(WAIT)
        elsewhere.cancel(run.id)
    finally:
        release.set()
    with pytest.raises(CancelledError):
        worker.wait_for_run(run.id, timeout=WAIT)
    worker.stop()
    assert elsewhere.get_steps(run.id) == []
    [attempt] = elsewhere.get_step_attempts(run.id)
    assert (attempt.step_name, attempt.status, attempt.completed_at) == ("work", INTERRUPTED, None)


def test_a_step_running_reads_started_once_a_heartbeat_found_it(durably: Durably) -> None:
    entered, release = threading.Event(), threading.Event()

    @durably.job("blocks")
    def blocks(step: StepContext, _input: None) -> str:
        step.run("first", lambda: 1)

        def block() -> str:
            entered.set()
            release.wait(WAIT)
            return "released"

        return step.run("block", block)

    run = blocks.trigger(None)
    durably.start()
    try:
        assert entered.wait(WAIT)
        testing.renew_leases(durably)  # what the heartbeat does every interval
        attempts = durably.get_step_attempts(run.id)
        assert [(a.step_name, a.status) for a in attempts] == [
            ("first", COMPLETED),
            ("block", STARTED),
        ]
        assert attempts[1].completed_at is None
    finally:
        release.set()
    assert durably.wait_for_run(run.id, timeout=WAIT).output == "released"
    assert [a.status for a in durably.get_step_attempts(run.id)] == [COMPLETED, COMPLETED]


@pytest.mark.parametrize("kind", ["def", "async"])
def test_a_step_cut_off_by_its_jobs_timeout_reads_interrupted(durably: Durably, kind: str) -> None:
    release = threading.Event()

    if kind == "def":

        @durably.job("hangs", timeout=0.3)
        def hangs(step: StepContext, _input: None) -> str:
            step.run("quick", lambda: "done")
            return step.run("slow", lambda: "late" if release.wait(WAIT) else "never")

    else:

        async def forever() -> str:
            await asyncio.sleep(WAIT * 2)
            return "never"

        @durably.job("hangs", timeout=0.3)
        async def hangs(step: AsyncStepContext, _input: None) -> str:
            await step.run("quick", lambda: "done")
            return await step.run("slow", forever)

    run = hangs.trigger(None)
    durably.start()
    try:
        with pytest.raises(RunFailedError, match="RunTimeoutError"):
            durably.wait_for_run(run.id, timeout=WAIT)
        attempts = durably.get_step_attempts(run.id)
    finally:
        release.set()
    assert [(a.step_name, a.status) for a in attempts] == [
        ("quick", COMPLETED),
        ("slow", INTERRUPTED),
    ]
