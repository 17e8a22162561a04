"""The thread worker: start/stop, FIFO, slots, hand-back on shutdown, errors it survives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import pytest

from durably import Durably, StepContext, ValidationError, testing
from durably.clock import now_ms
from durably.core.leases import ClaimedRun
from durably.core.operation import Operation
from durably.events import Event
from durably.schema import runs as runs_table
from durably.status import RunStatus

pytestmark = pytest.mark.both_engines

WAIT = 10.0
"""Seconds a test waits for something that should happen at once (only reached on failure)."""


def _set_column(durably: Durably, run_id: str, **values: Any) -> None:
    """Fabricate a stored state through durably's own connection pool."""
    testing.database(durably).write(
        lambda conn: conn.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(**values)
        )
    )


def _status(durably: Durably, run_id: str) -> RunStatus:
    run = durably.get_run(run_id)
    assert run is not None
    return run.status


def test_start_processes_a_pending_run(durably: Durably) -> None:
    @durably.job("greet")
    def greet(step: StepContext, input: dict[str, str]) -> str:
        return step.run("hello", lambda: f"hello {input['name']}")

    run = greet.trigger({"name": "ada"})
    durably.start()
    done = durably.wait_for_run(run.id, timeout=WAIT)

    assert done.status == RunStatus.COMPLETED
    assert done.output == "hello ada"


def test_stop_waits_for_the_in_flight_run_to_complete(durably: Durably) -> None:
    entered = threading.Event()
    release = threading.Event()

    @durably.job("in-flight")
    def in_flight(step: StepContext, input: None) -> str:
        def slow() -> str:
            entered.set()
            release.wait(WAIT)
            return "finished"

        return step.run("slow", slow)

    run = in_flight.trigger(None)
    durably.start()
    assert entered.wait(WAIT)

    stopped = threading.Event()

    def stop() -> None:
        durably.stop()
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    assert not stopped.wait(0.1), "stop() returned while a step was still running"
    release.set()
    stopper.join(WAIT)

    assert stopped.is_set()
    assert not durably.is_running
    run_after = durably.get_run(run.id)
    assert run_after is not None
    assert run_after.status == RunStatus.COMPLETED
    assert run_after.output == "finished"


def test_idle_stop_returns(durably: Durably) -> None:
    durably.start()
    assert durably.is_running
    durably.stop()
    assert not durably.is_running


def test_runs_are_processed_in_fifo_order(durably: Durably) -> None:
    order: list[int] = []

    @durably.job("ordered")
    def ordered(step: StepContext, input: int) -> None:
        order.append(input)

    runs = [ordered.trigger(n) for n in (1, 2, 3)]
    durably.start()
    for run in runs:
        durably.wait_for_run(run.id, timeout=WAIT)

    assert order == [1, 2, 3]


def test_max_concurrent_runs_runs_jobs_in_parallel(make_durably: Callable[..., Durably]) -> None:
    durably = make_durably(max_concurrent_runs=3)
    together = threading.Barrier(3, timeout=WAIT)
    lock = threading.Lock()
    active = 0
    peak = 0

    @durably.job("parallel")
    def parallel(step: StepContext, input: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        together.wait()  # only passes if three runs are executing at once
        with lock:
            active -= 1
        return input

    runs = parallel.batch_trigger([1, 2, 3])
    durably.start()
    for run in runs:
        assert durably.wait_for_run(run.id, timeout=WAIT).output == run.input
    assert peak == 3


def test_one_slot_never_runs_two_jobs_at_once(durably: Durably) -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    @durably.job("serial")
    def serial(step: StepContext, input: int) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        step.run("work", lambda: input)
        with lock:
            active -= 1

    runs = serial.batch_trigger([1, 2, 3, 4])
    durably.start()
    for run in runs:
        durably.wait_for_run(run.id, timeout=WAIT)
    assert peak == 1


def test_a_finished_slot_refills_without_waiting_for_the_poll(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(polling_interval=60.0)
    finished: list[int] = []

    @durably.job("back-to-back")
    def back_to_back(step: StepContext, input: int) -> None:
        finished.append(input)

    durably.start()  # finds nothing and goes to sleep for the 60 s poll
    runs = back_to_back.batch_trigger([1, 2])  # one local wake-up for both runs
    for run in runs:
        # Waiting longer than the poll would fail the test: only the refill can finish both.
        durably.wait_for_run(run.id, timeout=WAIT)
    assert finished == [1, 2]


def test_stop_timeout_hands_the_run_back_for_another_worker(
    make_durably: Callable[..., Durably],
) -> None:
    first = make_durably()
    second = make_durably()
    calls: Counter[str] = Counter()
    entered = threading.Event()

    def register(durably: Durably, *, blocking: bool) -> Any:
        @durably.job("long")
        def long(step: StepContext, input: None) -> str:
            def prepare() -> str:
                calls["prepare"] += 1
                return "prepared"

            def slow() -> str:
                calls["slow"] += 1
                if blocking:
                    entered.set()
                    step.wait(WAIT)  # wakes early when the worker gives the run up
                return "slow-done"

            prepared = step.run("prepare", prepare)
            return f"{prepared}/{step.run('slow', slow)}"

        return long

    job = register(first, blocking=True)
    register(second, blocking=False)

    run = job.trigger(None)
    first.start()
    assert entered.wait(WAIT)
    first.stop(timeout=0.2)

    handed_back = first.get_run(run.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.lease_owner) == (RunStatus.PENDING, None)
    assert handed_back.error is None

    # The lease was released, not left to expire: the other instance claims it at once.
    assert second.process_one()
    done = second.get_run(run.id)
    assert done is not None
    assert done.status == RunStatus.COMPLETED
    assert done.output == "prepared/slow-done"
    assert calls == Counter({"prepare": 1, "slow": 2})


def test_a_step_that_returns_after_the_stop_timeout_keeps_its_result(
    make_durably: Callable[..., Durably],
) -> None:
    """Told to stop, a step that did not look (and so did all its work) is kept."""
    durably = make_durably()
    calls: Counter[str] = Counter()
    entered, finish = threading.Event(), threading.Event()

    @durably.job("two-steps")
    def two_steps(step: StepContext, input: None) -> str:
        def first() -> str:
            calls["first"] += 1
            if calls["first"] == 1:
                entered.set()
                finish.wait(WAIT)  # blocking work that never checks step.cancelled
            return "first-done"

        first_result = step.run("first", first)
        return f"{first_result}/{step.run('second', lambda: calls.update(['second']))}"

    run = two_steps.trigger(None)
    durably.start()
    assert entered.wait(WAIT)
    lease = testing.held_lease(durably, run.id)
    assert lease is not None
    stopping = threading.Thread(target=durably.stop, kwargs={"timeout": 0.1})
    stopping.start()
    assert lease.aborted.wait(WAIT)  # the timeout passed: the run is told to stop
    finish.set()  # ... and its step returns while the lease is still held
    stopping.join(WAIT)

    handed_back = durably.get_run(run.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.lease_owner) == (RunStatus.PENDING, None)
    assert [(s.name, s.output) for s in durably.get_steps(run.id)] == [("first", "first-done")]
    assert durably.process_one()
    assert durably.wait_for_run(run.id, timeout=WAIT).output == "first-done/None"
    assert calls == Counter({"first": 1, "second": 1})


def test_worker_is_registered_while_running_and_removed_after_stop(
    durably: Durably, engine: str
) -> None:
    durably.start()
    mine = [w for w in durably.get_workers() if w.id == durably.worker_id]
    assert len(mine) == 1
    assert mine[0].engine == engine
    assert mine[0].pid == os.getpid()
    assert not mine[0].is_stale

    durably.stop()
    assert [w for w in durably.get_workers() if w.id == durably.worker_id] == []


def test_a_worker_id_of_the_longest_allowed_length_claims_and_completes_runs(
    make_durably: Callable[..., Durably],
) -> None:
    worker_id = "w" * 255
    durably = make_durably(worker_id=worker_id)

    @durably.job("echo")
    def echo(step: StepContext, value: int) -> int:
        return step.run("double", lambda: value * 2)

    durably.start()
    run = echo.trigger_and_wait(21, timeout=WAIT)
    assert run.output == 42
    assert [w.id for w in durably.get_workers()] == [worker_id]


@pytest.mark.parametrize("worker_id", [3, "", "  ", "w" * 256])
def test_a_worker_id_that_cannot_be_stored_is_refused_at_construction(
    db_url: str, worker_id: Any
) -> None:
    with pytest.raises(ValidationError, match="worker_id"):
        Durably(db_url, worker_id=worker_id)


def test_base_exception_in_a_job_leaves_the_run_resumable(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("interrupted")
    def interrupted(step: StepContext, input: None) -> str:
        def before() -> str:
            calls["before"] += 1
            return "kept"

        def exits() -> str:
            calls["exits"] += 1
            if calls["exits"] == 1:
                raise SystemExit(3)
            return "resumed"

        return f"{step.run('before', before)}/{step.run('exits', exits)}"

    run = interrupted.trigger(None)
    with pytest.raises(SystemExit):
        durably.process_one()

    stopped = durably.get_run(run.id)
    assert stopped is not None
    assert stopped.status in (RunStatus.LEASED, RunStatus.PENDING)
    assert stopped.error is None
    if stopped.status == RunStatus.LEASED:
        assert stopped.lease_expires_at is not None
        assert stopped.lease_expires_at.timestamp() * 1000 <= now_ms()

    assert durably.process_one()
    done = durably.get_run(run.id)
    assert done is not None
    assert done.status == RunStatus.COMPLETED
    assert done.output == "kept/resumed"
    assert calls == Counter({"before": 1, "exits": 2})


def test_a_worker_leaves_runs_of_jobs_it_does_not_know_to_workers_that_do(
    make_durably: Callable[..., Durably],
) -> None:
    """During a rolling deploy an old worker must not fail a new job's runs."""
    new_worker = make_durably()
    old_worker = make_durably()

    @new_worker.job("added-in-this-deploy")
    def added(step: StepContext, input: None) -> str:
        return "done"

    @old_worker.job("known-to-both")
    def known(step: StepContext, input: None) -> str:
        return "old"

    run = added.trigger(None)
    assert not old_worker.process_one()
    assert testing.claim(old_worker, "old-worker") is None

    waiting = old_worker.get_run(run.id)
    assert waiting is not None
    assert (waiting.status, waiting.lease_owner) == (RunStatus.PENDING, None)

    assert new_worker.process_one()
    done = new_worker.get_run(run.id)
    assert done is not None
    assert (done.status, done.output) == (RunStatus.COMPLETED, "done")


def test_corrupted_input_fails_that_run_and_the_worker_carries_on(durably: Durably) -> None:
    executed: list[Any] = []

    @durably.job("reads-input")
    def reads_input(step: StepContext, input: Any) -> Any:
        executed.append(input)
        return input

    broken = reads_input.trigger({"ok": False})
    healthy = reads_input.trigger({"ok": True})
    _set_column(durably, broken.id, input="{not json")

    durably.start()
    assert durably.wait_for_run(healthy.id, timeout=WAIT).output == {"ok": True}

    failed = durably.get_run(broken.id)
    assert failed is not None
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert "input" in failed.error.lower()
    assert "json" in failed.error.lower()
    assert executed == [{"ok": True}]


def test_worker_error_is_emitted_and_the_worker_keeps_running(
    durably: Durably, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Event] = []
    service = testing.lease_service(durably)
    real_claim = service.claim_op
    failures = Counter[str]()

    def flaky_claim(
        worker_id: str, job_names: Collection[str], queues: frozenset[str] | None = None
    ) -> Operation[ClaimedRun | None]:
        if failures["claim"] == 0:
            failures["claim"] += 1
            raise RuntimeError("database went away")
        return (yield from real_claim(worker_id, job_names, queues))

    def on_worker_error(event: Event) -> None:
        errors.append(event)
        raise RuntimeError("a broken worker:error listener")

    @durably.job("after-error")
    def after_error(step: StepContext, input: None) -> str:
        return step.run("ok", lambda: "ok")

    durably.on("worker:error", on_worker_error)
    monkeypatch.setattr(service, "claim_op", flaky_claim)
    run = after_error.trigger(None)
    durably.start()

    assert durably.wait_for_run(run.id, timeout=WAIT).output == "ok"
    assert durably.is_running
    claim_errors = [e for e in errors if e.context == "claim"]
    assert len(claim_errors) == 1
    assert claim_errors[0].error is not None
    assert "database went away" in claim_errors[0].error


def test_a_raising_listener_does_not_break_the_worker(durably: Durably) -> None:
    reported: list[BaseException] = []
    durably.on_error(lambda exc, event: reported.append(exc))

    def broken_listener(event: Event) -> None:
        raise RuntimeError(f"listener broke on {event.type}")

    for event_type in ("run:leased", "step:complete", "run:complete"):
        durably.on(event_type, broken_listener)

    @durably.job("listened")
    def listened(step: StepContext, input: int) -> int:
        return step.run("double", lambda: input * 2)

    runs = listened.batch_trigger([1, 2])
    durably.start()

    assert [durably.wait_for_run(r.id, timeout=WAIT).output for r in runs] == [2, 4]
    assert durably.is_running
    durably.stop()  # waits for the runs' last events to be delivered
    assert len(reported) == 6
    assert all(isinstance(exc, RuntimeError) for exc in reported)


ATEXIT_APP = """
import atexit, sys
from durably import Durably

durably = Durably(sys.argv[1], polling_interval=0.05)


@durably.job("slow")
def slow(step, input):
    step.run("first", lambda: "kept")
    return step.run("second", lambda: "cut short" if step.wait(60) else "full")


durably.start()
atexit.register(durably.stop, timeout=0.2)  # how a WSGI app stops its engine
while not durably.get_steps(sys.argv[2]):
    pass
sys.exit(0)  # e.g. gunicorn's worker exiting on SIGTERM
"""


def test_stop_registered_with_atexit_hands_in_flight_runs_back(db_url: str) -> None:
    durably = Durably(db_url)
    durably.migrate()
    slow = durably.job("slow")(lambda step, input: None)  # the subprocess runs it
    run = slow.trigger(None)
    exited = subprocess.run(
        [sys.executable, "-c", ATEXIT_APP, db_url, run.id],
        capture_output=True,
        text=True,
        timeout=30,  # the step would wait 60 s if the stop did not reach it
        check=False,
    )
    assert exited.returncode == 0, exited.stderr
    handed_back = durably.get_run(run.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.lease_owner) == (RunStatus.PENDING, None)
    assert [(s.name, s.output) for s in durably.get_steps(run.id)] == [("first", "kept")]
    durably.close()
