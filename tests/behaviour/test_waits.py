"""Durable waits: ``step.sleep``, ``step.prepare_wait`` / ``step.wait_for`` and ``durably.signal``,
on both engines and every driver. A waiting run holds no lease and no worker slot; a signal
needs no worker; results are replayed, deadlines are fixed once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durably import (
    AsyncStepContext,
    CancelledError,
    ConflictError,
    Durably,
    NotFoundError,
    RunStatus,
    StepContext,
    ValidationError,
    Wait,
    WaitExpiredError,
    WaitStatus,
)
from tests.behaviour.recording import record_events

pytestmark = pytest.mark.both_engines

WAIT = 30.0
"""Seconds a test waits for something that should happen soon (only reached on failure)."""


def _eventually(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _status(durably: Durably, run_id: str) -> RunStatus | None:
    run = durably.get_run(run_id)
    return None if run is None else run.status


def _waiting(durably: Durably, run_id: str) -> None:
    _eventually(lambda: _status(durably, run_id) == RunStatus.WAITING, f"run {run_id} waiting")


def _approval_job(durably: Durably, calls: Counter[str], timeout: float | None = None) -> Any:
    """Asks for an approval: a step before, the wait, a step after."""

    @durably.job("approval")
    def approval(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
        step.run("request", lambda: calls.update(["request"]))
        wait = step.prepare_wait("approved", timeout=timeout, metadata={"doc": input["doc"]})
        step.run("notify", lambda: calls.update(["notify"]) or wait.id)
        result = step.wait_for(wait)
        step.run("after", lambda: calls.update(["after"]))
        return {"wait": wait.id, "type": result.type, "payload": result.payload}

    return approval


def test_a_waiting_run_frees_the_only_slot_for_another_run_and_resumes_on_signal(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(max_concurrent_runs=1)
    calls: Counter[str] = Counter()
    approval = _approval_job(durably, calls)
    waiting_events = record_events(durably, "run:waiting")

    @durably.job("quick")
    def quick(step: StepContext, _input: None) -> str:
        return step.run("only", lambda: "done")

    run = approval.trigger({"doc": 7})
    durably.start()
    _waiting(durably, run.id)
    stored = durably.get_run(run.id)
    assert stored is not None
    assert (stored.lease_owner, stored.lease_expires_at) == (None, None), "no lease while waiting"
    assert [r.id for r in durably.get_runs(status="waiting")] == [run.id]
    assert durably.get_queue_stats().waiting == 1

    other = quick.trigger(None)
    assert durably.wait_for_run(other.id, timeout=WAIT).output == "done"
    assert _status(durably, run.id) == RunStatus.WAITING

    (wait,) = durably.get_waits(run.id)
    assert (wait.name, wait.kind, wait.status) == ("approved", "signal", WaitStatus.PENDING)
    assert wait.metadata == {"doc": 7}
    assert wait.deadline_at is None
    assert durably.signal(wait.id, {"approved": True}, signal_id="mail-1") == "accepted"
    done = durably.wait_for_run(run.id, timeout=WAIT)

    assert done.output == {"wait": wait.id, "type": "signal", "payload": {"approved": True}}
    assert calls == {"request": 1, "notify": 1, "after": 1}, "steps before the wait ran once"
    assert [(e.run_id, e.wait_id) for e in waiting_events] == [(run.id, wait.id)]
    (ended,) = durably.get_waits(run.id)
    assert (ended.status, ended.payload, ended.signal_id) == (
        WaitStatus.SIGNALLED,
        {"approved": True},
        "mail-1",
    )
    assert ended.input_wait is not None
    assert ended.slot_wait is not None


def test_a_signal_sent_while_no_worker_runs_is_taken_up_by_the_next_one(
    make_durably: Callable[..., Durably],
) -> None:
    calls: Counter[str] = Counter()
    first = make_durably()
    approval = _approval_job(first, calls)
    run = approval.trigger({"doc": 1})
    assert first.process_one()  # runs until the wait, then gives the run up
    assert _status(first, run.id) == RunStatus.WAITING
    assert not first.process_one(), "a run waiting for its signal is not claimable"
    first.close()

    sender = make_durably()  # no worker, and none in any other instance
    (wait,) = sender.get_waits(run.id)
    assert sender.signal(wait.id, "yes") == "accepted"
    assert _status(sender, run.id) == RunStatus.WAITING, "signalled, until a worker takes it"

    resumer = make_durably()
    _approval_job(resumer, calls)
    resumer.process_until_idle()
    done = resumer.get_run(run.id)
    assert done is not None
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"wait": wait.id, "type": "signal", "payload": "yes"}
    assert calls == {"request": 1, "notify": 1, "after": 1}


def test_signals_are_idempotent_by_signal_id_and_the_first_result_wins(durably: Durably) -> None:
    approval = _approval_job(durably, Counter())
    run = approval.trigger({"doc": 2})
    durably.process_one()
    (wait,) = durably.get_waits(run.id)

    assert durably.signal(wait.id, {"a": 1, "b": [2]}, signal_id="s-1") == "accepted"
    assert durably.signal(wait.id, {"b": [2], "a": 1}, signal_id="s-1") == "duplicate"
    with pytest.raises(ConflictError, match="another payload"):
        durably.signal(wait.id, {"a": 2}, signal_id="s-1")
    with pytest.raises(ConflictError, match="already been signalled"):
        durably.signal(wait.id, {"a": 1, "b": [2]}, signal_id="s-2")
    with pytest.raises(ConflictError, match="already been signalled"):
        durably.signal(wait.id, {"a": 1, "b": [2]})
    durably.process_until_idle()
    done = durably.get_run(run.id)
    assert done is not None
    assert done.output["payload"] == {"a": 1, "b": [2]}
    assert durably.signal(wait.id, {"a": 1, "b": [2]}, signal_id="s-1") == "duplicate"


def test_a_payload_of_typed_values_is_kept_and_a_resend_is_a_duplicate(durably: Durably) -> None:
    approval = _approval_job(durably, Counter())
    run = approval.trigger({"doc": 3})
    durably.process_one()
    (wait,) = durably.get_waits(run.id)
    payload = {"approved_at": datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc), "by": ("ana",)}

    assert durably.signal(wait.id, payload, signal_id="s-1") == "accepted"
    assert durably.signal(wait.id, dict(payload), signal_id="s-1") == "duplicate"
    durably.process_until_idle()
    done = durably.get_run(run.id)
    assert done is not None
    assert done.output["payload"] == payload  # the same types, not their JSON


def test_a_signal_before_wait_for_is_kept_and_the_job_does_not_suspend(durably: Durably) -> None:
    waiting_events = record_events(durably, "run:waiting")
    signalled = record_events(durably, "wait:signalled")

    @durably.job("early")
    def early(step: StepContext, _input: None) -> Any:
        wait = step.prepare_wait("answer")
        # The outside world answers before the job gets to wait_for.
        step.run("ask", lambda: durably.signal(wait.id, 42, signal_id="reply"))
        return step.wait_for(wait).payload

    run = early.trigger(None)
    durably.start()
    assert durably.wait_for_run(run.id, timeout=WAIT).output == 42
    assert waiting_events == []
    (wait,) = durably.get_waits(run.id)
    assert wait.suspended_at is None
    assert (wait.input_wait, wait.slot_wait) == (timedelta(0), timedelta(0))
    assert [(e.wait_id, e.data) for e in signalled] == [(wait.id, 42)]


def test_a_wait_times_out_at_its_deadline_and_a_late_signal_is_refused(durably: Durably) -> None:
    timed_out = record_events(durably, "wait:timed-out")
    approval = _approval_job(durably, Counter(), timeout=0.2)
    run = approval.trigger({"doc": 3})
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)

    assert (done.output["type"], done.output["payload"]) == ("timeout", None)
    (wait,) = durably.get_waits(run.id)
    assert wait.status == WaitStatus.TIMED_OUT
    assert wait.deadline_at is not None
    assert wait.resolved_at == wait.deadline_at
    assert wait.deadline_at - wait.created_at == timedelta(milliseconds=200)
    assert [e.wait_id for e in timed_out] == [wait.id]
    with pytest.raises(WaitExpiredError) as refused:
        durably.signal(wait.id, "too late")
    assert isinstance(refused.value, ConflictError)


def test_a_signal_after_the_deadline_is_refused_even_before_the_run_wakes(
    durably: Durably,
) -> None:
    approval = _approval_job(durably, Counter(), timeout=0.05)
    run = approval.trigger({"doc": 4})
    durably.process_one()
    (wait,) = durably.get_waits(run.id)
    assert wait.deadline_at is not None
    deadline = wait.deadline_at.timestamp()
    _eventually(lambda: time.time() > deadline + 0.01, "the deadline to pass")
    with pytest.raises(WaitExpiredError):
        durably.signal(wait.id, "late")
    stored = durably.get_wait(wait.id)
    assert stored is not None
    assert stored.status == WaitStatus.TIMED_OUT
    durably.process_until_idle()
    done = durably.get_run(run.id)
    assert done is not None
    assert done.output["type"] == "timeout"


def test_signal_errors(durably: Durably) -> None:
    with pytest.raises(NotFoundError):
        durably.signal("01NOSUCHWAIT0000000000000", 1)
    with pytest.raises(ValidationError):
        durably.signal("", 1)
    with pytest.raises(ValidationError):
        durably.signal("01NOSUCHWAIT0000000000000", 1, signal_id="")
    with pytest.raises(ValidationError):
        durably.signal("01NOSUCHWAIT0000000000000", object())
    assert durably.get_waits("01NOSUCHRUN00000000000000") == []
    assert durably.get_wait("01NOSUCHWAIT0000000000000") is None


def test_cancelling_a_waiting_run_cancels_it_and_closes_its_waits(durably: Durably) -> None:
    approval = _approval_job(durably, Counter())
    run = approval.trigger({"doc": 5})
    durably.process_one()
    assert durably.cancel(run.id).status == RunStatus.CANCELLED
    with pytest.raises(CancelledError):
        durably.wait_for_run(run.id, timeout=WAIT)
    (wait,) = durably.get_waits(run.id)
    assert wait.status == WaitStatus.CANCELLED
    with pytest.raises(ConflictError, match="cannot accept"):
        durably.signal(wait.id, "no")
    assert not durably.process_one()


def test_a_retried_run_waits_again_for_the_same_wait(durably: Durably) -> None:
    calls: Counter[str] = Counter()
    approval = _approval_job(durably, calls)
    run = approval.trigger({"doc": 6})
    durably.process_one()
    (wait,) = durably.get_waits(run.id)
    durably.cancel(run.id)
    durably.retry(run.id)
    durably.process_one()
    assert _status(durably, run.id) == RunStatus.WAITING
    assert [w.id for w in durably.get_waits(run.id)] == [wait.id]
    assert durably.signal(wait.id, "after all") == "accepted"
    durably.process_until_idle()
    done = durably.get_run(run.id)
    assert done is not None
    assert done.output["payload"] == "after all"
    assert calls == {"request": 1, "notify": 1, "after": 1}


NAP = timedelta(seconds=2)
"""Long enough that a loaded machine's pause between the sleep's two writes
(the wait stored, then waited for) cannot end it in the first process."""


def test_a_durable_sleep_wakes_at_the_time_its_first_call_fixed(
    make_durably: Callable[..., Durably],
) -> None:
    calls: Counter[str] = Counter()

    def register(durably: Durably) -> Any:
        @durably.job("nap")
        def nap(step: StepContext, _input: None) -> str:
            step.run("before", lambda: calls.update(["before"]))
            step.sleep("nap", NAP)
            step.run("after", lambda: calls.update(["after"]))
            return "rested"

        return nap

    first = make_durably()
    run = register(first).trigger(None)
    assert first.process_one()
    assert _status(first, run.id) == RunStatus.WAITING
    (sleep,) = first.get_waits(run.id)
    first.close()  # the process that put it to sleep is gone

    second = make_durably()
    register(second)
    second.start()
    done = second.wait_for_run(run.id, timeout=WAIT)
    assert done.output == "rested"
    assert calls == {"before": 1, "after": 1}
    (woke,) = second.get_waits(run.id)
    assert (woke.kind, woke.status) == ("sleep", WaitStatus.TIMED_OUT)
    assert woke.deadline_at == sleep.deadline_at == sleep.created_at + NAP
    assert woke.resolved_at == woke.deadline_at
    with pytest.raises(ConflictError, match="sleep"):
        second.signal(woke.id, "wake up")


def test_async_jobs_await_waits_and_sleeps(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("async-approval")
    async def async_approval(step: AsyncStepContext, _input: None) -> Any:
        await step.run("before", lambda: calls.update(["before"]))
        await step.sleep("pause", 0.05)
        wait = await step.prepare_wait("ok", timeout=timedelta(minutes=5))
        result = await step.wait_for(wait)
        return [result.type, result.payload]

    run = async_approval.trigger(None)
    durably.start()
    _eventually(lambda: len(durably.get_waits(run.id)) == 2, "the wait prepared")
    _waiting(durably, run.id)
    ok: Wait = durably.get_waits(run.id)[1]
    assert ok.name == "ok"
    assert durably.signal(ok.id, {"fine": 1}) == "accepted"
    assert durably.wait_for_run(run.id, timeout=WAIT).output == ["signal", {"fine": 1}]
    assert calls == {"before": 1}


def test_async_steps_run_concurrently_and_each_replays_by_its_name(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("fan-out")
    async def fan_out(step: AsyncStepContext, _input: None) -> Any:
        a_started, b_started = asyncio.Event(), asyncio.Event()

        async def branch(mine: asyncio.Event, other: asyncio.Event, name: str) -> str:
            calls[name] += 1
            mine.set()
            await asyncio.wait_for(other.wait(), WAIT)  # each needs the other running
            return name.upper()

        both = await asyncio.gather(
            step.run("a", lambda: branch(a_started, b_started, "a")),
            step.run("b", lambda: branch(b_started, a_started, "b")),
        )
        await step.sleep("between", 0.05)  # the run suspends; a and b replay afterwards
        return both

    run = fan_out.trigger(None)
    durably.start()
    assert durably.wait_for_run(run.id, timeout=WAIT).output == ["A", "B"]
    assert calls == {"a": 1, "b": 1}


def test_wait_misuse_fails_the_run_with_a_validation_error(durably: Durably) -> None:
    @durably.job("misuse")
    def misuse(step: StepContext, input: str) -> None:
        if input == "empty-name":
            step.prepare_wait("")
        elif input == "bad-timeout":
            step.prepare_wait("w", timeout=-1)
        elif input == "not-a-wait":
            step.wait_for("01SOMEID")  # type: ignore[arg-type]
        else:
            step.run("inside", lambda: step.sleep("nap", 1))

    runs = [misuse.trigger(case) for case in ("empty-name", "bad-timeout", "not-a-wait", "in-step")]
    durably.process_until_idle()
    for run in runs:
        stored = durably.get_run(run.id)
        assert stored is not None
        assert stored.status == RunStatus.FAILED, run.input
        assert (stored.error or "").startswith("ValidationError"), stored.error


def test_a_signal_and_a_sleep_wake_a_worker_of_this_process_without_waiting_for_its_poll(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(polling_interval=120.0)  # a poll would come far too late
    calls: Counter[str] = Counter()
    approval = _approval_job(durably, calls)

    @durably.job("nap")
    def nap(step: StepContext, _input: None) -> str:
        step.sleep("nap", 0.2)
        return "rested"

    durably.start()
    run = approval.trigger({"doc": 8})
    _waiting(durably, run.id)
    (wait,) = durably.get_waits(run.id)
    durably.signal(wait.id, "now")
    assert durably.wait_for_run(run.id, timeout=WAIT).output["payload"] == "now"
    napping = nap.trigger(None)
    assert durably.wait_for_run(napping.id, timeout=WAIT).output == "rested"
