"""Write batches sent while another is being committed share the next transaction.

The unit tests drive :class:`GroupCommit` with a commit function they control;
the last ones prove the wiring on every driver: real files and the remote server.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from durably import Durably, DurablyError, testing
from durably.clock import now_ms
from durably.core import enqueue as runs
from durably.errors import DatabaseError, DatabaseLockedError
from durably.hrana import dbapi as hrana_dbapi
from durably.jobs import build_request
from durably.storage import Database
from durably.storage.commit.group import GroupCommit
from durably.storage.driver_errors import may_send_again, translate
from tests.crash.harness import wait_for
from tests.faults import hold_write_lock


class Recorder:
    """A commit function: records each transaction; the first one waits until released."""

    def __init__(self, fail: Callable[[Sequence[str]], BaseException | None] = lambda _: None):
        self.transactions: list[list[str]] = []
        self.first_entered = threading.Event()
        self.release = threading.Event()
        self._fail = fail

    def __call__(self, statements: Sequence[str]) -> list[str]:
        if not self.transactions and not self.first_entered.is_set():
            self.first_entered.set()
            assert self.release.wait(10)
        error = self._fail(statements)
        if error is not None:
            raise error
        self.transactions.append(list(statements))
        return [f"done {s}" for s in statements]


class Callers:
    """Threads that each submit one batch and keep what they got back."""

    def __init__(self, group: GroupCommit[Any, Any]) -> None:
        self.group = group
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def submit(self, name: str, statements: list[str]) -> None:
        def call() -> None:
            try:
                self.results[name] = self.group.submit(statements)
            except BaseException as exc:  # what the caller would see, whatever it is
                self.results[name] = exc

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def _queued(group: GroupCommit[Any, Any]) -> int:
    return len(group._queue)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _leader_committing(recorder: Recorder, callers: Callers) -> None:
    """Start caller "a", which leads and stays inside its commit until released."""
    callers.submit("a", ["a1"])
    assert recorder.first_entered.wait(10)


def _queued_behind_a_commit(recorder: Recorder, batches: dict[str, list[str]]) -> Callers:
    """Caller "a" commits ["a1"] and stays inside that commit until ``batches`` have
    queued behind it, in order; then every caller finishes."""
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again)
    callers = Callers(group)
    _leader_committing(recorder, callers)
    for queued, (name, statements) in enumerate(batches.items(), start=1):
        callers.submit(name, statements)
        wait_for(lambda n=queued: _queued(group) == n, f"{queued} queued batches", interval=0.001)
    recorder.release.set()
    callers.join()
    return callers


def test_batches_queued_behind_a_commit_share_the_next_transaction(recorder: Recorder) -> None:
    callers = _queued_behind_a_commit(recorder, {"b": ["b1", "b2"], "c": ["c1"]})

    assert recorder.transactions == [["a1"], ["b1", "b2", "c1"]]
    assert callers.results == {"a": ["done a1"], "b": ["done b1", "done b2"], "c": ["done c1"]}
    # The lead went back to nobody: the next batch is committed at once, alone.
    assert callers.group.submit(["d1"]) == ["done d1"]
    assert recorder.transactions[-1] == ["d1"]


def test_one_failing_batch_gets_its_own_error_and_the_others_are_committed() -> None:
    recorder = Recorder(fail=lambda s: ValueError("bad statement") if "bad" in s else None)
    callers = _queued_behind_a_commit(recorder, {"b": ["b1"], "bad": ["x", "bad"], "c": ["c1"]})

    assert isinstance(callers.results["bad"], ValueError)
    assert callers.results["b"] == ["done b1"]
    assert callers.results["c"] == ["done c1"]
    # The shared transaction failed as a whole; each batch then went alone.
    assert recorder.transactions == [["a1"], ["b1"], ["c1"]]


def test_a_locked_database_fails_every_batch_of_the_group_after_one_wait() -> None:
    attempts: list[list[str]] = []

    def locked(statements: Sequence[str]) -> BaseException | None:
        if statements[0] != "a1":
            attempts.append(list(statements))
            return DatabaseLockedError("The database stayed locked")
        return None

    callers = _queued_behind_a_commit(Recorder(fail=locked), {"b": ["b1"], "c": ["c1"]})

    assert attempts == [["b1", "c1"]]  # not once more per batch
    assert isinstance(callers.results["b"], DatabaseLockedError)
    assert isinstance(callers.results["c"], DatabaseLockedError)
    assert callers.results["b"] is not callers.results["c"]


def _as_raised(driver_error: hrana_dbapi.Error) -> Exception:
    """What ``Database._commit_batch`` raises for a Hrana driver error: wrapped, translated."""
    wrapped = sa.exc.DBAPIError.instance(
        None, None, driver_error, hrana_dbapi.Error, connection_invalidated=True
    )
    try:
        raise translate(wrapped) from wrapped
    except Exception as raised:
        return raised


def test_after_an_unanswered_remote_commit_no_batch_of_the_group_is_sent_again() -> None:
    """The connection broke after the request went out: the group may have committed."""
    unanswered = hrana_dbapi.OperationalError(
        "lost the connection", executed=None, connection_lost=True
    )
    attempts: list[list[str]] = []

    def broken(statements: Sequence[str]) -> BaseException | None:
        if statements[0] == "a1":
            return None
        attempts.append(list(statements))
        return _as_raised(unanswered)

    callers = _queued_behind_a_commit(Recorder(fail=broken), {"b": ["b1"], "c": ["c1"]})

    assert attempts == [["b1", "c1"]]
    assert isinstance(callers.results["b"], DatabaseError)
    assert isinstance(callers.results["c"], DatabaseError)


def test_only_errors_that_refused_the_statements_let_them_be_sent_again() -> None:
    refused = hrana_dbapi.IntegrityError("UNIQUE constraint failed: durably_runs.id")
    unanswered = hrana_dbapi.OperationalError("lost the connection", executed=None)
    assert may_send_again(_as_raised(refused)) is True
    assert may_send_again(_as_raised(unanswered)) is False
    assert may_send_again(DatabaseLockedError("The database stayed locked")) is False


class Interrupted(BaseException):
    """What the signal handler raises: a stand-in for KeyboardInterrupt."""


@pytest.fixture
def interrupt_main() -> Iterator[Callable[[], None]]:
    """Send the main thread a signal whose handler raises :class:`Interrupted`."""

    def handler(_signum: int, _frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    yield lambda: os.kill(os.getpid(), signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, previous)


def test_a_caller_interrupted_while_queued_withdraws_its_batch_and_the_others_go_on(
    recorder: Recorder, interrupt_main: Callable[[], None]
) -> None:
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again)
    callers = Callers(group)
    _leader_committing(recorder, callers)

    def interrupt_once_queued() -> None:
        wait_for(lambda: _queued(group) == 1, "a queued batch", interval=0.001)
        interrupt_main()

    threading.Thread(target=interrupt_once_queued, daemon=True).start()
    with pytest.raises(Interrupted):
        group.submit(["m1"])  # this (main) thread waits in the queue until the signal
    callers.submit("b", ["b1"])
    wait_for(lambda: _queued(group) == 1, "a queued batch", interval=0.001)

    recorder.release.set()
    callers.join()

    assert recorder.transactions == [["a1"], ["b1"]]  # m1 was never committed
    assert callers.results == {"a": ["done a1"], "b": ["done b1"]}
    assert group.submit(["d1"]) == ["done d1"]


def test_when_the_leader_is_interrupted_its_group_hears_so_and_the_lead_passes_on() -> None:
    def leader_interrupted(statements: Sequence[str]) -> BaseException | None:
        return Interrupted() if statements[:1] == ["b1"] else None

    callers = _queued_behind_a_commit(Recorder(fail=leader_interrupted), {"b": ["b1"], "c": ["c1"]})
    # "d" arrives after the interrupted group: it must not wait for a leader that left.
    callers.submit("d", ["d1"])
    callers.join()

    assert isinstance(callers.results["b"], Interrupted)
    assert isinstance(callers.results["c"], DatabaseError)
    assert "interrupted" in str(callers.results["c"])
    assert callers.results["d"] == ["done d1"]


# -- the gate: the process's turn at the file, passed before the group is formed --


class Gate:
    """A gate that holds each leader until released, then lets it in or refuses it."""

    def __init__(self, refuse: Callable[[int], BaseException | None] = lambda _: None) -> None:
        self.waiting = threading.Event()
        self.open = threading.Event()
        self.entries = 0
        self.passes = 0
        self.inside = False
        self._refuse = refuse

    def __enter__(self) -> None:
        self.waiting.set()
        assert self.open.wait(10)
        self.entries += 1
        error = self._refuse(self.entries)
        if error is not None:
            raise error
        assert not self.inside, "two leaders inside the gate"
        self.inside = True
        self.passes += 1

    def __exit__(self, *exc_info: object) -> None:
        self.inside = False


def test_batches_queued_while_the_leader_waits_at_the_gate_share_its_transaction() -> None:
    recorder = Recorder()
    recorder.first_entered.set()
    gate = Gate()
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again, gate=gate)
    callers = Callers(group)
    callers.submit("a", ["a1"])
    assert gate.waiting.wait(10)
    callers.submit("b", ["b1", "b2"])
    callers.submit("c", ["c1"])
    wait_for(lambda: _queued(group) == 2, "two queued batches", interval=0.001)

    gate.open.set()
    callers.join()

    # One turn for all three, the leader's batch first.
    assert gate.passes == 1
    assert recorder.transactions[0][0] == "a1"
    assert sorted(recorder.transactions[0]) == ["a1", "b1", "b2", "c1"]
    assert callers.results == {"a": ["done a1"], "b": ["done b1", "done b2"], "c": ["done c1"]}
    assert not group._leading


def test_a_refused_gate_fails_the_batches_taken_for_it_and_the_next_leader_tries_again() -> None:
    locked = DatabaseLockedError("The database stayed locked for more than 0.3s")
    gate = Gate(refuse=lambda entry: locked if entry == 2 else None)
    gate.open.set()
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again, gate=gate)
    callers = Callers(group)
    _leader_committing(recorder, callers)  # "a" is inside the gate, committing
    callers.submit("b", ["b1"])
    callers.submit("c", ["c1"])
    wait_for(lambda: _queued(group) == 2, "two queued batches", interval=0.001)

    recorder.release.set()  # "b" leads [b, c]; the gate refuses it
    callers.join()
    callers.submit("d", ["d1"])  # the lead went back to nobody: the gate lets "d" in
    callers.join()

    assert callers.results["a"] == ["done a1"]
    for name in "bc":
        assert isinstance(callers.results[name], DatabaseLockedError)
    assert callers.results["b"] is not callers.results["c"]  # one error object per caller
    assert callers.results["d"] == ["done d1"]
    assert recorder.transactions == [["a1"], ["d1"]]


# -- several callers' batches handed over at once (the event loop's half) -------


def test_batches_handed_over_together_share_one_transaction_and_keep_their_errors() -> None:
    recorder = Recorder(fail=lambda s: ValueError("bad statement") if "bad" in s else None)
    recorder.first_entered.set()  # nothing to hold up
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again)

    assert group.submit_all([["a1"], ["b1", "b2"]]) == [["done a1"], ["done b1", "done b2"]]
    assert recorder.transactions == [["a1", "b1", "b2"]]

    results = group.submit_all([["c1"], ["x", "bad"], ["d1"]])
    assert results[0] == ["done c1"]
    assert isinstance(results[1], ValueError)  # returned in its place, not raised
    assert results[2] == ["done d1"]
    assert recorder.transactions[1:] == [["c1"], ["d1"]]  # the group failed; each went alone
    assert not group._leading


@pytest.mark.parametrize("queued_first", [[], ["b1"]], ids=["they-lead", "b-leads"])
def test_batches_handed_over_behind_a_commit_join_the_queue_as_one_group(
    recorder: Recorder, queued_first: list[str]
) -> None:
    group: GroupCommit[str, str] = GroupCommit(recorder, may_send_again)
    callers = Callers(group)
    _leader_committing(recorder, callers)
    if queued_first:
        callers.submit("b", queued_first)
        wait_for(lambda: _queued(group) == 1, "a queued batch", interval=0.001)
    handed: list[Any] = []
    thread = threading.Thread(target=lambda: handed.extend(group.submit_all([["c1"], ["d1"]])))
    thread.start()
    wait_for(lambda: _queued(group) == len(queued_first) + 2, "the batches queued", interval=0.001)

    recorder.release.set()
    callers.join()
    thread.join(10)

    assert recorder.transactions == [["a1"], [*queued_first, "c1", "d1"]]
    assert callers.results == {"a": ["done a1"], **({"b": ["done b1"]} if queued_first else {})}
    assert handed == [["done c1"], ["done d1"]]
    assert group.submit(["e1"]) == ["done e1"]  # the lead went back to nobody


# -- the wiring: Database.write_batch on every driver ---------------------------


def _new_run_batch(n: int) -> Any:
    return runs.new_runs([build_request("w", {"n": n})], now_ms())[1]


def _queue_behind_a_commit(db: Database, batches: dict[str, Any]) -> Callers:
    """Caller "first" leads and waits for the write lock; ``batches`` queue behind it."""
    group = db._group_commit
    callers = Callers(group)
    callers.submit("first", _new_run_batch(100))
    wait_for(lambda: group._leading, "a commit begun", interval=0.001)
    for count, (name, batch) in enumerate(batches.items(), start=1):
        callers.submit(name, batch)
        wait_for(lambda c=count: _queued(group) == c, f"{count} queued", interval=0.001)
    return callers


def test_concurrent_write_batches_are_committed_together(durably: Durably) -> None:
    db = testing.database(durably)
    durably.job("w")(lambda step, input: None)
    new = {f"run{n}": _new_run_batch(n) for n in range(4)}
    holder, release = hold_write_lock(db)
    callers = _queue_behind_a_commit(db, new)
    writes_before = db.writes

    release.set()
    holder.join(10)
    callers.join()

    # The held write, then the leader's batch and the four that queued while
    # it waited for the lock, as one transaction.
    assert db.writes - writes_before == 2
    assert {name: [o.rowcount for o in result] for name, result in callers.results.items()} == {
        name: [1] for name in ["first", *new]
    }
    listed = durably.get_runs(job_name="w")
    assert sorted(run.input["n"] for run in listed) == [0, 1, 2, 3, 100]


def test_a_failing_write_batch_spoils_none_of_those_committed_with_it(durably: Durably) -> None:
    db = testing.database(durably)
    durably.job("w")(lambda step, input: None)
    taken = _new_run_batch(7)
    db.write_batch(taken)
    holder, release = hold_write_lock(db)
    callers = _queue_behind_a_commit(
        db, {"one": _new_run_batch(1), "duplicate": taken, "two": _new_run_batch(2)}
    )

    release.set()
    holder.join(10)
    callers.join()

    assert isinstance(callers.results["duplicate"], DurablyError)
    assert [o.rowcount for o in callers.results["one"]] == [1]
    assert [o.rowcount for o in callers.results["two"]] == [1]
    listed = durably.get_runs(job_name="w")
    assert sorted(run.input["n"] for run in listed) == [1, 2, 7, 100]
