"""Leases and fencing: claims, renewal, stale reclaim, resume, single winner, stale owners."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from durably import DatabaseError, Durably, LeaseLostError, StepContext, ValidationError, testing
from durably.clock import now_ms, to_ms
from durably.core.leases import AbortReason, ClaimedRun, Lease
from durably.events import Event
from durably.models import Run
from durably.status import RunStatus, StepStatus

pytestmark = pytest.mark.both_engines

WAIT = 10.0
"""Seconds a test waits for something that should happen at once (only reached on failure)."""


def _get(durably: Durably, run_id: str) -> Run:
    run = durably.get_run(run_id)
    assert run is not None
    return run


def _claim(durably: Durably, worker_id: str) -> ClaimedRun:
    claimed = testing.claim(durably, worker_id)
    assert claimed is not None
    return claimed


def _persist(
    durably: Durably,
    lease: Lease,
    name: str,
    index: int,
    output: str | None,
    status: StepStatus = StepStatus.COMPLETED,
    error: str | None = None,
) -> bool:
    step = testing.lease_service(durably).persist_step_op(
        lease,
        name=name,
        index=index,
        status=status,
        output_json=output,
        error=error,
        started_at=now_ms(),
        run_attempt=1,
    )
    return testing.run_operation(durably, step)


def _noop_job(durably: Durably, name: str = "noop") -> Any:
    @durably.job(name)
    def noop(step: StepContext, input: Any) -> Any:
        return input

    return noop


def _two_claims(durably: Durably) -> tuple[str, Lease, Lease]:
    """One run claimed by worker-a, expired, then reclaimed by worker-b."""
    run = _noop_job(durably).trigger(None)
    first = _claim(durably, "worker-a").lease
    testing.expire_lease(durably, run.id)
    second = _claim(durably, "worker-b").lease
    assert second.run_id == run.id
    return run.id, first, second


# -- claims and renewal ---------------------------------------------------------


def test_every_claim_increments_the_lease_generation(durably: Durably) -> None:
    run = _noop_job(durably).trigger(None)
    assert _get(durably, run.id).lease_generation == 0

    generations = []
    for worker in ("worker-a", "worker-b", "worker-c"):
        lease = _claim(durably, worker).lease
        generations.append(lease.generation)
        stored = _get(durably, run.id)
        assert (stored.lease_owner, stored.lease_generation) == (worker, lease.generation)
        testing.expire_lease(durably, run.id)

    assert generations == [1, 2, 3]


def test_renewal_with_the_current_generation_extends_the_lease(durably: Durably) -> None:
    service = testing.lease_service(durably)
    with testing.fake_clock(durably) as clock:
        run = _noop_job(durably).trigger(None)
        lease = _claim(durably, "worker-a").lease
        claimed_until = _get(durably, run.id).lease_expires_at
        assert claimed_until is not None

        clock.advance(0.5)
        outcome = service.heartbeat([], [lease])

    assert outcome.renewed == [lease]
    assert outcome.lost == []
    renewed_until = _get(durably, run.id).lease_expires_at
    assert renewed_until is not None
    assert renewed_until > claimed_until
    assert to_ms(renewed_until) == clock.now + service.settings.lease_ms
    assert lease.expires_at == to_ms(renewed_until)


def test_renewal_with_a_stale_generation_is_lost(durably: Durably) -> None:
    run_id, stale, _current = _two_claims(durably)
    before = _get(durably, run_id)

    outcome = testing.lease_service(durably).heartbeat([], [stale])

    assert outcome.renewed == []
    assert outcome.lost == [(stale, AbortReason.LEASE_LOST)]
    assert _get(durably, run_id) == before
    assert before.lease_owner == "worker-b"


def test_an_expired_lease_nobody_claimed_is_renewed(durably: Durably) -> None:
    """A renewal the database kept waiting must not throw the run's work away."""
    run = _noop_job(durably).trigger(None)
    lease = _claim(durably, "worker-a").lease
    testing.expire_lease(durably, run.id)

    outcome = testing.lease_service(durably).heartbeat([], [lease])

    assert outcome.renewed == [lease]
    assert _get(durably, run.id).lease_owner == "worker-a"
    assert testing.claim(durably, "worker-b") is None


def test_an_expired_lease_another_worker_claimed_is_lost(durably: Durably) -> None:
    _run_id, first, _second = _two_claims(durably)

    outcome = testing.lease_service(durably).heartbeat([], [first])

    assert outcome.renewed == []
    assert [reason for _, reason in outcome.lost] == [AbortReason.LEASE_LOST]


# -- fenced writes --------------------------------------------------------------


def test_step_write_with_a_stale_generation_is_refused(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(preserve_steps=True)
    run_id, stale, current = _two_claims(durably)

    assert not _persist(durably, stale, "step1", 0, '"from-a"')
    assert durably.get_steps(run_id) == []

    assert _persist(durably, current, "step1", 0, '"from-b"')
    steps = durably.get_steps(run_id)
    assert [(s.name, s.output, s.lease_generation) for s in steps] == [
        ("step1", "from-b", current.generation)
    ]


def test_a_log_line_with_a_stale_generation_is_refused(durably: Durably) -> None:
    run_id, stale, current = _two_claims(durably)
    service = testing.lease_service(durably)

    def log(lease: Lease, message: str) -> bool:
        write = service.append_log_op(
            lease, step_name=None, level="info", message=message, data_json=None
        )
        return testing.run_operation(durably, write)

    assert not log(stale, "from-a")
    assert log(current, "from-b")
    assert [entry.message for entry in durably.get_logs(run_id)] == ["from-b"]


def test_completed_steps_advance_the_run_and_failed_ones_do_not(durably: Durably) -> None:
    run = _noop_job(durably).trigger(None)
    lease = _claim(durably, "worker-a").lease

    assert _persist(durably, lease, "step1", 0, '"ok"')
    after_completed = _get(durably, run.id)
    assert (after_completed.current_step_index, after_completed.completed_step_count) == (1, 1)

    assert _persist(durably, lease, "step2", 1, None, StepStatus.FAILED, "boom")
    after_failed = _get(durably, run.id)
    assert (after_failed.current_step_index, after_failed.completed_step_count) == (1, 1)


@pytest.mark.parametrize(
    ("end", "status"),
    [
        ("complete", RunStatus.COMPLETED),
        ("fail", RunStatus.FAILED),
        ("cancel", RunStatus.CANCELLED),
    ],
)
def test_a_run_keeps_the_step_counters_it_ended_with(
    durably: Durably, end: str, status: RunStatus
) -> None:
    # While a run is active its counters are counted from its step rows;
    # the update that ends it stores them, as a completed run's steps are deleted.
    run = _noop_job(durably).trigger(None)
    lease = _claim(durably, "worker-a").lease
    assert _persist(durably, lease, "step1", 0, '"a"')
    assert _persist(durably, lease, "step2", 1, '"b"')
    service = testing.lease_service(durably)

    if end == "complete":
        assert service.complete(lease, '"done"') is True
        assert durably.get_steps(run.id) == []
    elif end == "fail":
        assert service.fail(lease, "boom")[0] is True
    else:
        durably.cancel(run.id)

    ended = _get(durably, run.id)
    assert ended.status == status
    assert (ended.current_step_index, ended.completed_step_count) == (2, 2)
    (listed,) = durably.get_runs()
    assert (listed.current_step_index, listed.completed_step_count) == (2, 2)

    if end != "complete":
        # Retried, it is active again: the Run retry returns and the one read
        # back agree, and it resumes after the two steps it kept.
        retried = durably.retry(run.id)
        assert retried.status == RunStatus.PENDING
        assert (retried.current_step_index, retried.completed_step_count) == (2, 2)
        again = _get(durably, run.id)
        assert (again.current_step_index, again.completed_step_count) == (2, 2)


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_finishing_with_a_stale_generation_is_refused_and_changes_nothing(
    durably: Durably, finish: str
) -> None:
    run_id, stale, current = _two_claims(durably)
    before = _get(durably, run_id)
    service = testing.lease_service(durably)

    if finish == "complete":
        assert service.complete(stale, '"late"') is False
    else:
        assert service.fail(stale, "late failure") == (False, None)

    assert _get(durably, run_id) == before
    assert before.status == RunStatus.LEASED
    assert before.output is None
    assert before.error is None

    assert service.complete(current, '"winner"') is True
    done = _get(durably, run_id)
    assert (done.status, done.output, done.lease_owner) == (RunStatus.COMPLETED, "winner", None)


# -- stale runs -------------------------------------------------------------------


def test_an_expired_lease_is_reclaimed_by_another_worker_keeping_started_at(
    durably: Durably,
) -> None:
    service = testing.lease_service(durably)
    with testing.fake_clock(durably) as clock:
        run = _noop_job(durably).trigger(None)
        first = _claim(durably, "worker-a")
        started_at = _get(durably, run.id).started_at

        clock.advance(service.settings.stale_threshold / 2)
        assert testing.claim(durably, "worker-b") is None, "a live lease is not claimable"

        clock.advance(service.settings.stale_threshold)
        second = _claim(durably, "worker-b")

    assert second.lease.run_id == run.id
    assert second.lease.generation == first.lease.generation + 1
    reclaimed = _get(durably, run.id)
    assert reclaimed.lease_owner == "worker-b"
    assert reclaimed.status == RunStatus.LEASED
    assert reclaimed.started_at == started_at


def test_a_run_left_by_a_dead_worker_expires_and_is_reclaimed(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(stale_threshold=0.3, heartbeat_interval=0.1)
    run = _noop_job(durably).trigger("payload")
    _claim(durably, "dead-worker")  # claimed, then never heartbeated nor finished

    done_event = threading.Event()
    durably.on("run:complete", lambda event: done_event.set())
    durably.start()

    assert done_event.wait(WAIT)
    done = _get(durably, run.id)
    assert (done.status, done.output) == (RunStatus.COMPLETED, "payload")


def test_a_reclaimed_run_resumes_from_its_completed_steps(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("resume")
    def resume(step: StepContext, input: None) -> list[str]:
        def step1() -> str:
            calls["step1"] += 1
            return "recomputed"

        def step2() -> str:
            calls["step2"] += 1
            return "result-2"

        return [step.run("step1", step1), step.run("step2", step2)]

    run = resume.trigger(None)
    lease = _claim(durably, "worker-a").lease
    assert _persist(durably, lease, "step1", 0, '"result-1"')
    testing.expire_lease(durably, run.id)

    assert durably.process_one()

    done = _get(durably, run.id)
    assert done.status == RunStatus.COMPLETED
    assert done.output == ["result-1", "result-2"]
    assert calls == Counter({"step2": 1})


def test_a_claim_that_cannot_read_its_stored_steps_gives_the_lease_back(
    durably: Durably, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _noop_job(durably).trigger(None)
    lease = _claim(durably, "worker-a").lease
    assert _persist(durably, lease, "step1", 0, '"result-1"')
    testing.expire_lease(durably, run.id)

    def unreadable(*_args: object) -> None:
        raise DatabaseError("the steps could not be read")

    monkeypatch.setattr("durably.core.claim.step_history", unreadable)
    with pytest.raises(DatabaseError, match="could not be read"):
        testing.claim(durably, "worker-b")
    monkeypatch.undo()

    # Given back at once, not held until the lease would expire.
    reclaimed = _claim(durably, "worker-c")
    assert reclaimed.lease.run_id == run.id
    assert reclaimed.completed_steps == {"step1": '"result-1"'}


def test_release_expired_returns_expired_runs_to_pending(durably: Durably) -> None:
    job = _noop_job(durably)
    expired = job.trigger(1)
    live = job.trigger(2)
    _claim(durably, "worker-a")
    _claim(durably, "worker-b")
    testing.expire_lease(durably, expired.id)

    assert testing.release_expired(durably) == 1

    released = _get(durably, expired.id)
    assert released.status == RunStatus.PENDING
    assert released.lease_owner is None
    assert released.lease_expires_at is None
    assert released.error is None
    still_live = _get(durably, live.id)
    assert (still_live.status, still_live.lease_owner) == (RunStatus.LEASED, "worker-b")


def test_release_expired_never_fails_a_run_with_a_pending_same_key_successor(
    durably: Durably,
) -> None:
    job = _noop_job(durably)
    older = job.trigger("older", concurrency_key="g")
    _claim(durably, "worker-a")
    newer = job.trigger("newer", concurrency_key="g")
    testing.expire_lease(durably, older.id)

    testing.release_expired(durably)

    kept = _get(durably, older.id)
    assert kept.status in (RunStatus.LEASED, RunStatus.PENDING)
    assert kept.error is None
    assert _get(durably, newer.id).status == RunStatus.PENDING
    assert _claim(durably, "worker-b").lease.run_id == older.id


# -- concurrency keys ---------------------------------------------------------------


def test_a_concurrency_key_is_exclusive_across_jobs(durably: Durably) -> None:
    first = _noop_job(durably, "job-a").trigger(None, concurrency_key="g")
    second = _noop_job(durably, "job-b").trigger(None, concurrency_key="g")
    keyless = _noop_job(durably, "job-c").trigger(None)
    service = testing.lease_service(durably)

    holder = _claim(durably, "worker-1")
    assert holder.lease.run_id == first.id
    assert _claim(durably, "worker-2").lease.run_id == keyless.id
    assert testing.claim(durably, "worker-3") is None
    assert _get(durably, second.id).status == RunStatus.PENDING

    assert service.complete(holder.lease, "null")
    assert _claim(durably, "worker-4").lease.run_id == second.id


def test_an_expired_same_key_lease_is_reclaimed_before_a_newer_pending_run(
    durably: Durably,
) -> None:
    job = _noop_job(durably)
    older = job.trigger("older", concurrency_key="g")
    _claim(durably, "worker-a")
    newer = job.trigger("newer", concurrency_key="g")
    testing.expire_lease(durably, older.id)

    reclaimed = _claim(durably, "worker-b")
    assert reclaimed.lease.run_id == older.id
    assert _get(durably, older.id).lease_owner == "worker-b"
    assert testing.claim(durably, "worker-c") is None
    assert _get(durably, newer.id).status == RunStatus.PENDING


# -- two instances on one file ---------------------------------------------------------


def _claim_all_at_once(
    claimers: list[Durably],
) -> tuple[list[ClaimedRun | None], list[BaseException]]:
    """Every instance claims at the same moment (barrier), each from its own thread."""
    barrier = threading.Barrier(len(claimers), timeout=WAIT)
    results: list[ClaimedRun | None] = [None] * len(claimers)
    errors: list[BaseException] = []

    def claim(slot: int) -> None:
        try:
            barrier.wait()
            results[slot] = testing.claim(claimers[slot], f"claimer-{slot}")
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return results, errors


def test_single_winner_per_claim_across_two_instances(
    make_durably: Callable[..., Durably],
) -> None:
    first = make_durably()
    second = make_durably()
    job = _noop_job(first)
    _noop_job(second)

    for round_number in range(25):
        run = job.trigger(round_number)
        results, errors = _claim_all_at_once([first, first, second, second])

        assert errors == []
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, f"round {round_number}: {len(winners)} winners"
        assert winners[0].lease.run_id == run.id
        assert winners[0].lease.generation == 1
        assert testing.lease_service(first).complete(winners[0].lease, "null")


def _stale_owner_setup(
    make_durably: Callable[..., Durably],
) -> tuple[Durably, Durably]:
    # The stale owner never heartbeats during the test and its local deadline is far away,
    # so only the database's fencing can stop its late writes.
    owner = make_durably(heartbeat_interval=20.0, stale_threshold=30.0)
    reclaimer = make_durably(preserve_steps=True)
    return owner, reclaimer


def _in_thread(fn: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


class Gate:
    """A point a job reaches and waits at until the test opens it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def pass_through(self) -> None:
        self.reached.set()
        self.opened.wait(WAIT)

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT)


def test_stale_owner_cannot_write_its_step_or_start_the_next_one(
    make_durably: Callable[..., Durably],
) -> None:
    owner, reclaimer = _stale_owner_setup(make_durably)
    calls: Counter[str] = Counter()
    owner_gate, reclaimer_gate = Gate(), Gate()
    owner_events: list[str] = []
    owner.on(None, lambda event: owner_events.append(str(event.type)))

    @owner.job("contested")
    def owner_job(step: StepContext, input: None) -> str:
        def step1() -> str:
            calls["owner-step1"] += 1
            owner_gate.pass_through()
            return "owner-step1"

        step.run("step1", step1)
        step.run("step2", lambda: calls.update(["owner-step2"]))
        return "original"

    @reclaimer.job("contested")
    def reclaimer_job(step: StepContext, input: None) -> str:
        def step1() -> str:
            calls["reclaimer-step1"] += 1
            reclaimer_gate.pass_through()
            return "reclaimer-step1"

        step.run("step1", step1)
        step.run("step2", lambda: calls.update(["reclaimer-step2"]))
        return "reclaimer"

    run = owner_job.trigger(None)
    owner_thread = _in_thread(owner.process_one)
    owner_gate.wait_reached()
    testing.expire_lease(reclaimer, run.id)
    reclaimer_thread = _in_thread(reclaimer.process_one)
    reclaimer_gate.wait_reached()  # the reclaimer now holds a live lease (generation 2)

    owner_gate.opened.set()  # the stale owner's step1 returns and tries to record itself
    owner_thread.join(WAIT)
    assert not owner_thread.is_alive()
    assert reclaimer.get_steps(run.id) == [], "the stale owner's step write was refused"
    assert _get(reclaimer, run.id).lease_owner == reclaimer.worker_id

    reclaimer_gate.opened.set()
    reclaimer_thread.join(WAIT)
    final = _get(reclaimer, run.id)
    assert (final.status, final.output, final.error) == (RunStatus.COMPLETED, "reclaimer", None)
    assert calls == Counter({"owner-step1": 1, "reclaimer-step1": 1, "reclaimer-step2": 1})
    steps = reclaimer.get_steps(run.id)
    assert [(s.name, s.output, s.lease_generation) for s in steps] == [
        ("step1", "reclaimer-step1", 2),
        ("step2", None, 2),
    ]
    assert "step:complete" not in owner_events
    assert "run:complete" not in owner_events
    assert "run:fail" not in owner_events


@pytest.mark.parametrize("late_action", ["return", "raise"])
def test_stale_owner_cannot_overwrite_the_reclaimers_outcome(
    make_durably: Callable[..., Durably], late_action: str
) -> None:
    owner, reclaimer = _stale_owner_setup(make_durably)
    owner_gate, reclaimer_gate = Gate(), Gate()
    owner_errors: list[Event] = []
    owner.on("worker:error", owner_errors.append)

    @owner.job("contested")
    def owner_job(step: StepContext, input: None) -> str:
        step.run("step1", lambda: "owner-step1")
        owner_gate.pass_through()  # e.g. a long GC pause or a partition, outside any step
        if late_action == "raise":
            raise RuntimeError("late failure")
        return "stale"

    @reclaimer.job("contested")
    def reclaimer_job(step: StepContext, input: None) -> str:
        first = step.run("step1", lambda: "reclaimer-step1")
        step.run("step2", reclaimer_gate.pass_through)
        return f"reclaimer after {first}"

    run = owner_job.trigger(None)
    owner_thread = _in_thread(owner.process_one)
    owner_gate.wait_reached()
    testing.expire_lease(reclaimer, run.id)
    reclaimer_thread = _in_thread(reclaimer.process_one)
    reclaimer_gate.wait_reached()  # the reclaimer holds a live lease (generation 2)

    owner_gate.opened.set()  # the stale owner tries to complete (or fail) the run
    owner_thread.join(WAIT)
    assert not owner_thread.is_alive()
    during = _get(reclaimer, run.id)
    assert (during.status, during.output, during.error) == (RunStatus.LEASED, None, None)
    assert during.lease_owner == reclaimer.worker_id
    context = "run-completion" if late_action == "return" else "run-failure"
    assert [e.context for e in owner_errors] == [context]

    reclaimer_gate.opened.set()
    reclaimer_thread.join(WAIT)
    final = _get(reclaimer, run.id)
    assert final.status == RunStatus.COMPLETED
    assert final.output == "reclaimer after owner-step1", "step1 is replayed from storage"
    assert final.error is None


# -- cancellation and the local lease deadline ---------------------------------------------


@pytest.mark.parametrize("canceller", ["same-instance", "other-instance"])
def test_cancel_stops_a_leased_run_at_its_next_step(
    make_durably: Callable[..., Durably], canceller: str
) -> None:
    durably = make_durably()
    other = durably if canceller == "same-instance" else make_durably()
    calls: Counter[str] = Counter()
    in_step1 = threading.Event()
    release = threading.Event()

    @durably.job("cancellable")
    def cancellable(step: StepContext, input: None) -> str:
        def step1() -> str:
            calls["step1"] += 1
            in_step1.set()
            release.wait(WAIT)
            return "one"

        step.run("step1", step1)
        step.run("step2", lambda: calls.update(["step2"]))
        step.run("step3", lambda: calls.update(["step3"]))
        return "finished"

    run = cancellable.trigger(None)
    worker = _in_thread(durably.process_one)
    assert in_step1.wait(WAIT)
    assert other.cancel(run.id).status == RunStatus.CANCELLED
    release.set()
    worker.join(WAIT)
    assert not worker.is_alive()

    final = _get(durably, run.id)
    assert final.status == RunStatus.CANCELLED
    assert final.output is None
    assert calls == Counter({"step1": 1})
    assert all(s.status != StepStatus.COMPLETED for s in durably.get_steps(run.id))


def test_cancelled_run_stays_cancelled_when_the_job_returns_normally(durably: Durably) -> None:
    in_step1 = threading.Event()
    release = threading.Event()
    swallowed: list[BaseException] = []

    @durably.job("stubborn")
    def stubborn(step: StepContext, input: None) -> str:
        def step1() -> None:
            in_step1.set()
            release.wait(WAIT)

        try:
            step.run("step1", step1)
            step.run("step2", lambda: None)
        except Exception as exc:  # a job that swallows everything
            swallowed.append(exc)
        return "returned normally"

    run = stubborn.trigger(None)
    worker = _in_thread(durably.process_one)
    assert in_step1.wait(WAIT)
    durably.cancel(run.id)
    release.set()
    worker.join(WAIT)

    final = _get(durably, run.id)
    assert (final.status, final.output) == (RunStatus.CANCELLED, None)
    assert len(swallowed) == 1


def test_a_worker_that_cannot_renew_its_lease_starts_no_new_step(
    make_durably: Callable[..., Durably], monkeypatch: pytest.MonkeyPatch
) -> None:
    durably = make_durably(stale_threshold=0.3, heartbeat_interval=0.1)
    service = testing.lease_service(durably)
    renewal_errors: list[Event] = []
    durably.on(
        "worker:error",
        lambda e: renewal_errors.append(e) if e.context == "lease-renewal" else None,
    )
    calls: Counter[str] = Counter()
    stopped_by: list[BaseException] = []

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database unreachable")

    @durably.job("partitioned")
    def partitioned(step: StepContext, input: None) -> str:
        def step1() -> str:
            calls["step1"] += 1
            if calls["step1"] == 1:
                threading.Event().wait(0.5)  # outlives the 0.3 s lease without a renewal
            return "one"

        try:
            step.run("step1", step1)
            step.run("step2", lambda: calls.update(["step2"]))
        except LeaseLostError as exc:
            stopped_by.append(exc)
            raise
        return "done"

    # Every renewal fails: the heartbeat's, and the one the run makes to
    # confirm its lease before step2, once step1 outlived the local deadline.
    monkeypatch.setattr(service, "heartbeat_op", unreachable)
    run = partitioned.trigger(None)
    assert durably.process_one()

    assert calls == Counter({"step1": 1})
    assert len(stopped_by) == 1
    stopped = _get(durably, run.id)
    assert stopped.status == RunStatus.LEASED
    assert stopped.error is None
    assert renewal_errors, "failed renewals are reported as worker:error"

    # Once the database is reachable again, the run is resumed when its lease expires.
    monkeypatch.undo()
    done_event = threading.Event()
    durably.on("run:complete", lambda event: done_event.set())
    durably.start()
    assert done_event.wait(WAIT)
    assert _get(durably, run.id).output == "done"
    # step1 returned while the lease still held (nobody had claimed the run):
    # its result was kept, and is replayed.
    assert calls == Counter({"step1": 1, "step2": 1})


# -- poison runs ------------------------------------------------------------------------


def _abandon(durably: Durably, run_id: str, times: int) -> None:
    """``times`` workers claim the run and die holding it (their leases expire)."""
    for number in range(times):
        claimed = _claim(durably, f"crashed-{number}")
        assert claimed.lease.run_id == run_id
        testing.expire_lease(durably, run_id)


def test_a_run_that_keeps_killing_its_worker_fails_after_max_recoveries(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(max_recoveries=2)
    ran: list[str] = []

    @durably.job("poison")
    def poison(step: StepContext, input: None) -> None:
        ran.append("ran")

    failures: list[Event] = []
    durably.on("run:fail", failures.append)
    run = poison.trigger(None)
    _abandon(durably, run.id, 3)  # the first claim, then two recoveries: the limit

    assert durably.process_one()  # would be the third recovery: failed instead of run

    failed = _get(durably, run.id)
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert "recover" in failed.error
    assert failed.recovery_count == 3
    assert ran == []
    assert [event.run_id for event in failures] == [run.id]
    assert [r.id for r in durably.get_failed_runs()] == [run.id]


def test_recoveries_within_the_limit_run_and_a_retry_starts_a_fresh_count(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(max_recoveries=5)

    @durably.job("flaky-host", max_recoveries=1)
    def flaky_host(step: StepContext, input: None) -> str:
        return "done"

    run = flaky_host.trigger(None)
    _abandon(durably, run.id, 3)
    durably.process_one()
    assert _get(durably, run.id).status == RunStatus.FAILED  # the job's own limit: 1

    durably.retry(run.id)
    assert _get(durably, run.id).recovery_count == 0
    _abandon(durably, run.id, 1)  # the retried run's first worker dies: one recovery is allowed
    durably.process_one()
    done = _get(durably, run.id)
    assert (done.status, done.output, done.recovery_count) == (RunStatus.COMPLETED, "done", 1)


def test_a_run_handed_back_at_shutdown_is_pending_and_not_a_recovery(durably: Durably) -> None:
    run = _noop_job(durably).trigger("x")
    claimed = _claim(durably, "stopping-worker")

    assert testing.lease_service(durably).release(claimed.lease)

    handed_back = _get(durably, run.id)
    assert (handed_back.status, handed_back.lease_owner) == (RunStatus.PENDING, None)
    assert durably.process_one()
    done = _get(durably, run.id)
    assert (done.status, done.recovery_count) == (RunStatus.COMPLETED, 0)


def test_max_recoveries_must_be_a_count_or_none(make_durably: Callable[..., Durably]) -> None:
    with pytest.raises(ValidationError, match="max_recoveries"):
        make_durably(max_recoveries=-1)
    durably = make_durably(max_recoveries=None)
    with pytest.raises(ValidationError, match="max_recoveries"):
        durably.job("bad", max_recoveries="5")  # type: ignore[call-overload]
