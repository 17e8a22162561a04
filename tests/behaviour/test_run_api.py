"""The run API: reading and filtering runs, waiting, cancel, delete, retrigger, retry, purge."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durably import (
    CancelledError,
    ConflictError,
    Disposition,
    Durably,
    DurablyError,
    Job,
    NotFoundError,
    Run,
    RunFailedError,
    RunStatus,
    StepContext,
    ValidationError,
    testing,
)

pytestmark = pytest.mark.both_engines

MakeDurably = Callable[..., Durably]


def echo(step: StepContext, input: Any) -> Any:
    return input


def stepped(step: StepContext, input: Any) -> Any:
    first = step.run("first", lambda: 1)
    step.log.info("between", {"first": first})
    if input.get("fail"):
        step.run("second", lambda: _boom(input["fail"]))
    return {"first": first}


def _boom(message: str) -> None:
    raise ValueError(message)


class Jobs:
    def __init__(self, durably: Durably) -> None:
        self.echo: Job[Any, Any] = durably.job("echo")(echo)
        self.stepped: Job[Any, Any] = durably.job("stepped")(stepped)


@pytest.fixture
def jobs(durably: Durably) -> Jobs:
    return Jobs(durably)


def get(durably: Durably, run_id: str) -> Run:
    run = durably.get_run(run_id)
    assert run is not None, f"run {run_id} is missing"
    return run


def completed_run(durably: Durably, jobs: Jobs, input: Any = None) -> Run:
    run = jobs.echo.trigger(input)
    assert durably.process_one()
    return get(durably, run.id)


def failed_run(durably: Durably, jobs: Jobs, message: str = "kaboom", **options: Any) -> Run:
    run = jobs.stepped.trigger({"fail": message}, **options)
    assert durably.process_one()
    return get(durably, run.id)


def ids(runs: list[Run]) -> list[str]:
    return [r.id for r in runs]


# -- get_run ------------------------------------------------------------------


def test_get_run_unknown_id_is_none(durably: Durably, jobs: Jobs) -> None:
    assert durably.get_run("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None
    assert durably.get_run("nope") is None


def test_run_fields(durably: Durably, jobs: Jobs) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    pending = jobs.echo.trigger({"x": [1, "a", None]}, labels={"env": "test"})

    run = get(durably, pending.id)
    assert isinstance(run.status, RunStatus)
    assert run.status == "pending"
    assert run.status is RunStatus.PENDING
    assert run.created_at.tzinfo is not None
    assert run.created_at.utcoffset() == timedelta(0)
    assert before <= run.created_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert run.started_at is None
    assert run.completed_at is None
    assert run.output is None
    assert run.error is None
    assert run.disposition is None  # only trigger results carry one

    assert durably.process_one()
    done = get(durably, pending.id)
    assert done.status == "completed"
    assert done.output == {"x": [1, "a", None]}
    assert done.labels == {"env": "test"}
    assert done.started_at is not None
    assert done.completed_at is not None
    assert done.started_at.utcoffset() == timedelta(0)
    assert done.created_at <= done.started_at <= done.completed_at
    assert done.updated_at >= done.created_at


def test_runs_are_immutable_values(durably: Durably, jobs: Jobs) -> None:
    # Runs are built without their dataclass __init__ (durably.models._builder):
    # what comes out must still be an ordinary frozen Run.
    triggered = jobs.echo.trigger({"x": 1}, labels={"env": "test"})
    read = get(durably, triggered.id)
    assert type(triggered) is Run
    assert type(read) is Run
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.status = RunStatus.COMPLETED  # type: ignore[misc]
    # A new attribute: AttributeError, or TypeError from CPython 3.11's slotted dataclasses.
    with pytest.raises((AttributeError, TypeError)):
        read.note = "x"  # type: ignore[attr-defined]
    assert read == triggered  # the disposition takes no part in equality
    assert repr(read).startswith(f"Run(id='{read.id}', job_name='echo', status=")
    assert dataclasses.replace(read, error="e").error == "e"
    assert read.input == {"x": 1}
    assert read.labels == {"env": "test"}


# -- get_runs -------------------------------------------------------------------


def test_get_runs_newest_first(durably: Durably, jobs: Jobs) -> None:
    triggered = [jobs.echo.trigger(i) for i in range(5)]

    assert ids(durably.get_runs()) == ids(triggered)[::-1]
    assert ids(durably.get_runs(limit=3)) == ids(triggered)[::-1][:3]
    assert ids(durably.get_runs(limit=3, offset=2)) == ids(triggered)[::-1][2:5]
    assert ids(durably.get_runs(offset=2)) == ids(triggered)[::-1][2:]
    assert durably.get_runs(offset=10) == []


def test_get_runs_pages_never_overlap_with_equal_timestamps(durably: Durably, jobs: Jobs) -> None:
    # One batch: every run shares the same created_at; only the tie-breaker orders them.
    triggered = jobs.echo.batch_trigger(list(range(25))) + [jobs.echo.trigger(i) for i in range(5)]

    pages = [durably.get_runs(limit=7, offset=offset) for offset in range(0, 35, 7)]

    seen = [run_id for page in pages for run_id in ids(page)]
    assert len(seen) == len(set(seen)) == 30
    assert seen == ids(durably.get_runs())
    assert seen == ids(triggered)[::-1]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]


def test_get_runs_status_filter(durably: Durably, jobs: Jobs) -> None:
    done = completed_run(durably, jobs)
    failed = failed_run(durably, jobs)
    pending = jobs.echo.trigger(3)
    cancelled = durably.cancel(jobs.echo.trigger(4).id)

    assert ids(durably.get_runs(status="completed")) == [done.id]
    assert ids(durably.get_runs(status=RunStatus.FAILED)) == [failed.id]
    assert ids(durably.get_runs(status=["pending", "cancelled"])) == [cancelled.id, pending.id]
    assert len(durably.get_runs(status=[])) == 4
    assert durably.get_runs(status="leased") == []


@pytest.mark.parametrize("status", ["running", "", "PENDING", ["pending", "bogus"]])
def test_get_runs_invalid_status(durably: Durably, status: Any) -> None:
    with pytest.raises(ValidationError):
        durably.get_runs(status=status)


def test_get_runs_job_name_filter(durably: Durably, jobs: Jobs) -> None:
    a = jobs.echo.trigger(1)
    b = jobs.stepped.trigger({})
    durably.job("third")(echo).trigger(3)

    assert ids(durably.get_runs(job_name="echo")) == [a.id]
    assert ids(durably.get_runs(job_name=["echo", "stepped"])) == [b.id, a.id]
    assert durably.get_runs(job_name="unknown") == []
    assert len(durably.get_runs(job_name=[])) == 3


def test_get_runs_filters_combine_with_pagination(durably: Durably, jobs: Jobs) -> None:
    echo_runs = [jobs.echo.trigger(i) for i in range(4)]
    for i in range(3):
        jobs.stepped.trigger({"i": i})

    page = durably.get_runs(job_name="echo", status="pending", limit=2, offset=1)

    assert ids(page) == ids(echo_runs)[::-1][1:3]


def test_get_runs_labels_are_anded(durably: Durably, jobs: Jobs) -> None:
    both = jobs.echo.trigger(1, labels={"env": "prod", "team": "a"})
    prod = jobs.echo.trigger(2, labels={"env": "prod", "team": "b"})
    jobs.echo.trigger(3, labels={"env": "dev", "team": "a"})
    jobs.echo.trigger(4)

    assert ids(durably.get_runs(labels={"env": "prod"})) == [prod.id, both.id]
    assert ids(durably.get_runs(labels={"env": "prod", "team": "a"})) == [both.id]
    assert durably.get_runs(labels={"env": "prod", "team": "c"}) == []
    assert len(durably.get_runs(labels={})) == 4
    with pytest.raises(ValidationError):
        durably.get_runs(labels={"bad key": "x"})


@pytest.mark.parametrize(
    "options",
    [{"limit": -1}, {"offset": -1}, {"limit": 1.5}, {"limit": "3"}, {"offset": True}],
)
def test_get_runs_invalid_limit_offset(durably: Durably, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        durably.get_runs(**options)


def test_queue_stats_count_waiting_and_running_runs(durably: Durably, jobs: Jobs) -> None:
    empty = durably.get_queue_stats()
    assert (empty.pending, empty.running, empty.oldest_pending_age) == (0, 0, None)
    first = jobs.echo.trigger({"n": 1})
    time.sleep(0.05)
    jobs.echo.trigger({"n": 2})
    stats = durably.get_queue_stats()
    assert (stats.pending, stats.running) == (2, 0)
    assert stats.oldest_pending_age is not None
    assert timedelta(milliseconds=50) <= stats.oldest_pending_age < timedelta(seconds=30)
    assert durably.process_one()  # the oldest first
    assert durably.get_run(first.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
    after = durably.get_queue_stats()
    first_age = datetime.now(timezone.utc) - first.created_at
    assert (after.pending, after.running) == (1, 0)
    assert after.oldest_pending_age is not None
    assert after.oldest_pending_age <= first_age - timedelta(milliseconds=40)  # the second's age


def test_get_failed_runs(durably: Durably, jobs: Jobs) -> None:
    completed_run(durably, jobs)
    first = failed_run(durably, jobs, "one")
    second = failed_run(durably, jobs, "two")
    jobs.echo.trigger(1)

    failed = durably.get_failed_runs()

    assert ids(failed) == [second.id, first.id]
    assert all(r.status == "failed" for r in failed)
    assert "two" in (failed[0].error or "")
    assert ids(durably.get_failed_runs(limit=1)) == [second.id]


def test_job_get_run_and_get_runs_are_scoped_to_the_job(durably: Durably, jobs: Jobs) -> None:
    mine = jobs.echo.trigger(1)
    theirs = jobs.stepped.trigger({})

    got = jobs.echo.get_run(mine.id)
    assert got is not None
    assert got.id == mine.id
    assert jobs.echo.get_run(theirs.id) is None
    assert jobs.echo.get_run("unknown") is None
    assert ids(jobs.echo.get_runs()) == [mine.id]
    assert ids(jobs.stepped.get_runs(status="pending")) == [theirs.id]
    assert jobs.echo.get_runs(status="completed") == []


# -- wait_for_run -----------------------------------------------------------------


def test_wait_for_completed_run_returns_it(durably: Durably, jobs: Jobs) -> None:
    run = completed_run(durably, jobs, {"v": 1})

    waited = durably.wait_for_run(run.id, timeout=1)

    assert waited.id == run.id
    assert waited.status == "completed"
    assert waited.output == {"v": 1}


def test_wait_for_failed_run_raises_run_failed_error(durably: Durably, jobs: Jobs) -> None:
    run = failed_run(durably, jobs, "disk full")

    with pytest.raises(RunFailedError, match="disk full") as info:
        durably.wait_for_run(run.id, timeout=1)

    assert info.value.run_id == run.id
    assert "disk full" in (info.value.error or "")
    assert isinstance(info.value, DurablyError)


def test_wait_for_cancelled_run_raises_cancelled_error(durably: Durably, jobs: Jobs) -> None:
    run = durably.cancel(jobs.echo.trigger(1).id)

    with pytest.raises(CancelledError) as info:
        durably.wait_for_run(run.id, timeout=1)
    assert info.value.run_id == run.id


def test_wait_for_unknown_run_raises_not_found(durably: Durably) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        durably.wait_for_run("missing", timeout=1)


def test_wait_for_run_times_out(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger(1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        durably.wait_for_run(run.id, timeout=0.2)
    elapsed = time.monotonic() - started

    assert 0.15 <= elapsed < 2
    assert get(durably, run.id).status == "pending"


@pytest.mark.parametrize("options", [{"timeout": -1}, {"polling_interval": 0}])
def test_wait_for_run_invalid_options(
    durably: Durably, jobs: Jobs, options: dict[str, Any]
) -> None:
    run = jobs.echo.trigger(1)
    with pytest.raises(ValidationError):
        durably.wait_for_run(run.id, **options)


def test_wait_for_run_wakes_on_in_process_completion(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger({"v": 2})
    durably.start()

    started = time.monotonic()
    done = durably.wait_for_run(run.id, timeout=10, polling_interval=60)

    assert done.output == {"v": 2}
    assert time.monotonic() - started < 5


def test_wait_for_run_wakes_on_in_process_cancel(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger(1)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(durably.wait_for_run, run.id, timeout=10, polling_interval=60)
        time.sleep(0.05)  # let the waiter reach its wait
        started = time.monotonic()
        durably.cancel(run.id)
        with pytest.raises(CancelledError):
            future.result(timeout=5)

    assert time.monotonic() - started < 5


def test_wait_for_run_sees_completion_by_another_instance(make_durably: MakeDurably) -> None:
    waiter = make_durably()
    worker = make_durably()
    job = waiter.job("echo")(echo)
    worker.job("echo")(echo)
    run = job.trigger({"from": "waiter"})

    worker.start()
    done = waiter.wait_for_run(run.id, timeout=10)

    assert done.status == "completed"
    assert done.output == {"from": "waiter"}
    assert not waiter.is_running


def test_wait_for_run_sees_failure_by_another_instance(make_durably: MakeDurably) -> None:
    waiter = make_durably()
    worker = make_durably()
    job = waiter.job("stepped")(stepped)
    worker.job("stepped")(stepped)
    run = job.trigger({"fail": "remote failure"})

    worker.start()
    with pytest.raises(RunFailedError, match="remote failure"):
        waiter.wait_for_run(run.id, timeout=10)


# -- trigger_and_wait -------------------------------------------------------------


def test_trigger_and_wait_returns_completed_run(durably: Durably, jobs: Jobs) -> None:
    durably.start()

    done = jobs.echo.trigger_and_wait({"v": 7}, timeout=10, labels={"a": "b"})

    assert done.status == "completed"
    assert done.output == {"v": 7}
    assert done.disposition is Disposition.CREATED
    assert done.labels == {"a": "b"}


def test_trigger_and_wait_with_idempotency_key(durably: Durably, jobs: Jobs) -> None:
    durably.start()

    first = jobs.echo.trigger_and_wait({"v": 1}, timeout=10, idempotency_key="once")
    again = jobs.echo.trigger_and_wait({"v": 2}, timeout=10, idempotency_key="once")

    assert again.id == first.id
    assert again.output == {"v": 1}
    assert again.disposition == "idempotent"
    assert get(durably, first.id).idempotency_key == "once"


def test_trigger_and_wait_raises_on_failure(durably: Durably, jobs: Jobs) -> None:
    durably.start()

    with pytest.raises(RunFailedError, match="bad step"):
        jobs.stepped.trigger_and_wait({"fail": "bad step"}, timeout=10)


def test_trigger_and_wait_times_out_without_worker(durably: Durably, jobs: Jobs) -> None:
    with pytest.raises(TimeoutError):
        jobs.echo.trigger_and_wait(1, timeout=0.2)
    assert len(durably.get_runs(status="pending")) == 1


def test_trigger_and_wait_coalesced_returns_original_runs_output(
    durably: Durably, jobs: Jobs
) -> None:
    original = jobs.echo.trigger({"v": "original"}, concurrency_key="k")
    coalesced = threading.Event()
    durably.on("run:coalesced", lambda event: coalesced.set())

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            jobs.echo.trigger_and_wait,
            {"v": "skipped"},
            timeout=10,
            concurrency_key="k",
            coalesce="skip",
        )
        assert coalesced.wait(5)
        assert durably.process_one()
        done = future.result(timeout=10)

    assert done.id == original.id
    assert done.output == {"v": "original"}
    assert done.disposition == "coalesced"


# -- cancel ---------------------------------------------------------------------------


def test_cancel_pending_run(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger(1)

    cancelled = durably.cancel(run.id)

    assert cancelled.id == run.id
    assert cancelled.status == "cancelled"
    stored = get(durably, run.id)
    assert stored.status is RunStatus.CANCELLED
    assert stored.completed_at is not None
    assert durably.process_one() is False


def test_cancel_leased_run(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger(1)
    claimed = testing.claim(durably, "other-worker")
    assert claimed is not None
    assert claimed.lease.run_id == run.id

    durably.cancel(run.id)

    stored = get(durably, run.id)
    assert stored.status == "cancelled"
    assert stored.lease_owner is None


def test_cancel_terminal_run_conflicts(durably: Durably, jobs: Jobs) -> None:
    done = completed_run(durably, jobs)
    failed = failed_run(durably, jobs)
    cancelled = durably.cancel(jobs.echo.trigger(1).id)

    for run in (done, failed, cancelled):
        with pytest.raises(ConflictError):
            durably.cancel(run.id)
        assert get(durably, run.id).status == run.status


def test_cancel_unknown_run(durably: Durably) -> None:
    with pytest.raises(NotFoundError):
        durably.cancel("missing")


# -- delete_run ---------------------------------------------------------------------


def test_delete_active_run_conflicts(durably: Durably, jobs: Jobs) -> None:
    pending = jobs.echo.trigger(1)
    with pytest.raises(ConflictError):
        durably.delete_run(pending.id)

    testing.claim(durably, "other-worker")
    with pytest.raises(ConflictError):
        durably.delete_run(pending.id)
    assert get(durably, pending.id).status == "leased"


def test_delete_failed_run_removes_steps_and_logs(durably: Durably, jobs: Jobs) -> None:
    failed = failed_run(durably, jobs)
    assert durably.get_steps(failed.id) != []
    assert durably.get_logs(failed.id) != []

    durably.delete_run(failed.id)

    assert durably.get_run(failed.id) is None
    assert durably.get_steps(failed.id) == []
    assert durably.get_logs(failed.id) == []


def test_delete_completed_run_with_preserved_steps(make_durably: MakeDurably) -> None:
    durably = make_durably(preserve_steps=True)
    job = durably.job("stepped")(stepped)
    run = job.trigger({}, labels={"k": "v"})
    assert durably.process_one()
    assert [s.name for s in durably.get_steps(run.id)] == ["first"]

    durably.delete_run(run.id)

    assert durably.get_run(run.id) is None
    assert durably.get_steps(run.id) == []
    assert durably.get_logs(run.id) == []
    assert durably.get_runs(labels={"k": "v"}) == []


def test_delete_cancelled_run(durably: Durably, jobs: Jobs) -> None:
    run = durably.cancel(jobs.echo.trigger(1).id)

    durably.delete_run(run.id)

    assert durably.get_run(run.id) is None


def test_delete_unknown_run(durably: Durably) -> None:
    with pytest.raises(NotFoundError):
        durably.delete_run("missing")


# -- retrigger ----------------------------------------------------------------------


def test_retrigger_failed_run(durably: Durably, jobs: Jobs) -> None:
    failed = failed_run(durably, jobs, labels={"env": "prod"})
    triggered: list[str | None] = []
    durably.on("run:trigger", lambda event: triggered.append(event.run_id))

    fresh = durably.retrigger(failed.id)

    assert fresh.id != failed.id
    assert fresh.status == "pending"
    assert fresh.disposition == "created"
    assert fresh.job_name == "stepped"
    assert fresh.input == failed.input
    assert fresh.labels == {"env": "prod"}
    assert fresh.error is None
    assert triggered == [fresh.id]
    assert get(durably, failed.id).status == "failed"


def test_retrigger_completed_run(durably: Durably, jobs: Jobs) -> None:
    done = completed_run(durably, jobs, {"v": 1})

    fresh = durably.retrigger(done.id)

    assert fresh.id != done.id
    assert fresh.input == {"v": 1}
    assert durably.process_one()
    assert get(durably, fresh.id).output == {"v": 1}


def test_retrigger_active_run_conflicts(durably: Durably, jobs: Jobs) -> None:
    run = jobs.echo.trigger(1)
    with pytest.raises(ConflictError):
        durably.retrigger(run.id)
    testing.claim(durably, "other-worker")
    with pytest.raises(ConflictError):
        durably.retrigger(run.id)
    assert len(durably.get_runs()) == 1


def test_retrigger_keyed_run_while_same_key_pending_conflicts(durably: Durably, jobs: Jobs) -> None:
    done = jobs.echo.trigger(1, concurrency_key="k")
    assert durably.process_one()
    jobs.echo.trigger(2, concurrency_key="k")

    with pytest.raises(ConflictError):
        durably.retrigger(done.id)


def test_retrigger_keeps_concurrency_key_but_not_idempotency_key(
    durably: Durably, jobs: Jobs
) -> None:
    done = jobs.echo.trigger(1, concurrency_key="k", idempotency_key="once")
    assert durably.process_one()

    fresh = durably.retrigger(done.id)

    assert fresh.concurrency_key == "k"
    assert fresh.idempotency_key is None
    again = jobs.echo.trigger(2, idempotency_key="once")
    assert (again.id, again.disposition) == (done.id, Disposition.IDEMPOTENT)


def test_retrigger_unknown_run(durably: Durably) -> None:
    with pytest.raises(NotFoundError):
        durably.retrigger("missing")


def test_retrigger_run_of_unregistered_job(make_durably: MakeDurably) -> None:
    owner = make_durably()
    job = owner.job("echo")(echo)
    run = job.trigger(1)
    assert owner.process_one()
    stranger = make_durably()

    with pytest.raises(NotFoundError, match="echo"):
        stranger.retrigger(run.id)


# -- retry ---------------------------------------------------------------------------


def test_retry_failed_run_goes_back_to_pending(durably: Durably, jobs: Jobs) -> None:
    failed = failed_run(durably, jobs, "flaky")
    assert failed.error is not None

    retried = durably.retry(failed.id)

    assert retried.id == failed.id
    assert retried.status == "pending"
    assert retried.error is None
    stored = get(durably, failed.id)
    assert stored.status == "pending"
    assert stored.error is None
    assert ids(durably.get_failed_runs()) == []


def test_retry_cancelled_run(durably: Durably, jobs: Jobs) -> None:
    run = durably.cancel(jobs.echo.trigger({"v": 1}).id)

    durably.retry(run.id)

    assert durably.process_one()
    assert get(durably, run.id).output == {"v": 1}


def test_retry_non_failed_run_conflicts(durably: Durably, jobs: Jobs) -> None:
    done = completed_run(durably, jobs)
    pending = jobs.echo.trigger(2)

    for run in (done, pending):
        with pytest.raises(ConflictError):
            durably.retry(run.id)
    with pytest.raises(NotFoundError):
        durably.retry("missing")


# -- purge_runs ----------------------------------------------------------------------


def _terminal_runs(durably: Durably, jobs: Jobs) -> list[Run]:
    return [
        completed_run(durably, jobs),
        failed_run(durably, jobs),
        durably.cancel(jobs.echo.trigger(3).id),
    ]


def _in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def test_purge_deletes_only_terminal_runs_older_than_cutoff(durably: Durably, jobs: Jobs) -> None:
    terminal = _terminal_runs(durably, jobs)
    pending = jobs.echo.trigger(4)

    assert durably.purge_runs(older_than=_in(-3600)) == 0
    assert len(durably.get_runs()) == 4

    assert durably.purge_runs(older_than=_in(60)) == 3

    assert ids(durably.get_runs()) == [pending.id]
    assert all(durably.get_steps(r.id) == [] for r in terminal)
    assert all(durably.get_logs(r.id) == [] for r in terminal)


def test_purge_respects_limit(durably: Durably, jobs: Jobs) -> None:
    _terminal_runs(durably, jobs)

    assert durably.purge_runs(older_than=_in(60), limit=2) == 2
    assert len(durably.get_runs()) == 1
    assert durably.purge_runs(older_than=_in(60), limit=2) == 1
    assert durably.purge_runs(older_than=_in(60)) == 0


def test_purge_never_deletes_pending_or_leased_runs(durably: Durably, jobs: Jobs) -> None:
    leased = jobs.echo.trigger(1)
    testing.claim(durably, "other-worker")
    pending = jobs.echo.trigger(2)

    assert durably.purge_runs(older_than=_in(3600)) == 0
    assert set(ids(durably.get_runs())) == {leased.id, pending.id}


@pytest.mark.parametrize(
    "options",
    [{"older_than": "2024-01-01"}, {"older_than": None}, {"limit": 0}, {"limit": -5}],
)
def test_purge_invalid_arguments(durably: Durably, options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"older_than": _in(60), **options}
    with pytest.raises(ValidationError):
        durably.purge_runs(**arguments)


# -- retain_runs -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["30s", "invalid", "0d", "", "1.5h", timedelta(0), 30])
def test_invalid_retain_runs(make_durably: MakeDurably, value: Any) -> None:
    with pytest.raises(ValidationError):
        make_durably(retain_runs=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("24h", timedelta(hours=24)),
        ("60m", timedelta(minutes=60)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_valid_retain_runs(make_durably: MakeDurably, value: Any, expected: timedelta) -> None:
    assert make_durably(retain_runs=value).settings.retain_runs == expected
