"""durably's processes take turns at writing a local file (durably/storage/commit/turns.py).

Two ``WriteTurns`` on one lock file stand for two processes: ``flock`` locks
belong to an open file, not to a process, so they exclude each other within
one process just as across two. One test holds the turn in a real second
process and writes through ``Durably``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import Durably
from durably.storage.commit import turns as write_turns
from durably.storage.commit.turns import LOCK_FILE_SUFFIX, WriteTurns, lock_file_for
from tests.crash.harness import lock_held, wait_for
from tests.faults import held_by_another_process

pytestmark = pytest.mark.skipif(os.name != "posix", reason="turns need flock")

WAIT = 10.0
"""Deadline for things that must happen: generous, so a slow machine never fails a test."""


@pytest.fixture
def lock_file(tmp_path: Path) -> Path:
    path = lock_file_for(str(tmp_path / "durably.db"))
    assert path is not None
    return path


@pytest.fixture
def turns(lock_file: Path) -> Iterator[Callable[[], WriteTurns]]:
    made: list[WriteTurns] = []

    def make() -> WriteTurns:
        made.append(WriteTurns(lock_file))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _soon() -> float:
    return time.monotonic() + WAIT


def test_a_waiting_writer_gets_the_turn_when_the_holder_lets_go(
    turns: Callable[[], WriteTurns],
) -> None:
    holder, waiter = turns(), turns()
    assert holder.acquire(_soon())
    got: list[bool] = []
    waiting = threading.Thread(target=lambda: got.append(waiter.acquire(_soon())))
    waiting.start()
    waiting.join(0.3)
    assert got == []  # still waiting: the turn is taken
    holder.release()
    waiting.join(WAIT)
    assert got == [True]
    # And now the first one waits for the second.
    assert not holder.acquire(time.monotonic() + 0.1)
    waiter.release()
    wait_for(lambda: holder.acquire(_soon()), "the first writer's turn", WAIT)


def test_a_writer_waits_no_longer_than_its_deadline_and_its_late_turn_is_handed_back(
    turns: Callable[[], WriteTurns],
) -> None:
    holder, quitter, third = turns(), turns(), turns()
    assert holder.acquire(_soon())
    started = time.monotonic()
    assert not quitter.acquire(started + 0.2)
    assert time.monotonic() - started >= 0.2
    holder.release()
    # The quitter's helper gets the turn it gave up, and hands it back.
    assert third.acquire(_soon())
    third.release()
    wait_for(lambda: quitter.acquire(_soon()), "the quitter's turn", WAIT)
    quitter.release()


def test_a_writer_waits_for_a_turn_no_longer_than_the_turn_patience(
    turns: Callable[[], WriteTurns], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_turns, "TURN_PATIENCE", 0.2)
    holder, waiter = turns(), turns()
    assert holder.acquire(_soon())
    started = time.monotonic()
    assert not waiter.acquire(started + WAIT)
    assert 0.2 <= time.monotonic() - started < WAIT / 2


def test_once_it_gave_up_a_writer_does_not_wait_again_until_the_holder_lets_go(
    turns: Callable[[], WriteTurns], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The holder has kept its turn past a whole wait: it is stopped or stuck.
    # Every later write would otherwise wait out the patience again.
    monkeypatch.setattr(write_turns, "TURN_PATIENCE", WAIT)
    holder, waiter = turns(), turns()
    assert holder.acquire(_soon())
    assert not waiter.acquire(time.monotonic() + 0.1)
    started = time.monotonic()
    assert not waiter.acquire(_soon())
    assert time.monotonic() - started < WAIT / 2  # at once, not after the patience
    waiter.release()  # it holds nothing: this changes nothing
    assert not turns().acquire(time.monotonic() + 0.1)  # the holder still has the turn
    holder.release()
    # Once the holder lets go, the waiter takes turns again.
    wait_for(lambda: waiter.acquire(_soon()), "the waiter's turn", WAIT)
    assert not turns().acquire(time.monotonic() + 0.1)
    waiter.release()


def test_without_a_lock_file_writes_go_on(tmp_path: Path) -> None:
    nowhere = WriteTurns(tmp_path / "missing" / ("durably.db" + LOCK_FILE_SUFFIX))
    assert nowhere.acquire(time.monotonic())
    nowhere.release()
    assert WriteTurns(None).acquire(time.monotonic())
    assert lock_file_for("") is None
    assert lock_file_for("file:/data/durably.db?mode=rwc") == Path(
        "/data/durably.db" + LOCK_FILE_SUFFIX
    )


def test_a_forked_child_takes_turns_of_its_own(turns: Callable[[], WriteTurns]) -> None:
    # A child shares the parent's open file, and with it the parent's flock:
    # it must open its own, or both would think they had the turn.
    parent = turns()
    assert parent.acquire(_soon())
    pid = os.fork()
    if pid == 0:  # the child: the parent holds the turn
        code = 1
        try:
            code = 0 if not parent.acquire(time.monotonic() + 0.2) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent.release()


HOLDER = """
import sys, time
from durably.storage.commit.turns import WriteTurns, lock_file_for
turns = WriteTurns(lock_file_for(sys.argv[1]))
assert turns.acquire(time.monotonic() + 10)
print("holding", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("driver", ["sqlite", "libsql"])
def test_a_process_that_keeps_its_turn_does_not_stop_the_writes_of_others(
    make_durably: Callable[..., Durably], db_path: Path
) -> None:
    # The holder takes its turn and never lets go, as a process stopped
    # (SIGSTOP, a debugger) in the middle of a write would. SQLite's lock is
    # free, so writes go on without turns: they must not wait out the lock
    # timeout and fail with DatabaseLockedError.
    durably = make_durably(lock_timeout=WAIT * 3)

    @durably.job("noop")
    def noop(step: object, input: dict[str, int]) -> dict[str, int]:
        return input

    with held_by_another_process(HOLDER, str(db_path), ready="holding", timeout=WAIT):
        during = [noop.trigger({"n": n}) for n in range(3)]
    assert [durably.get_run(run.id) is not None for run in during] == [True, True, True]
    # The holder's exit ended its turn, and writes take turns again.
    run = noop.trigger({"n": 3})
    assert durably.get_run(run.id) is not None
    assert (db_path.parent / (db_path.name + LOCK_FILE_SUFFIX)).exists()


@pytest.mark.parametrize("driver", ["sqlite", "libsql"])
def test_a_write_waiting_out_a_locked_database_leaves_the_turn_to_other_processes(
    make_durably: Callable[..., Durably], db_path: Path
) -> None:
    # A process that stops while its write waits (SIGSTOP, a debugger) must
    # not keep durably's other processes from their turns meanwhile.
    durably = make_durably(lock_timeout=WAIT)

    @durably.job("noop")
    def noop(step: object, input: dict[str, int]) -> dict[str, int]:
        return input

    noop.trigger({"n": 0})  # the file and its schema exist
    other_process = WriteTurns(lock_file_for(str(db_path)))
    triggered: list[Any] = []
    try:
        with lock_held(db_path):  # SQLite's own lock, held by a writer that is not durably
            writer = threading.Thread(target=lambda: triggered.append(noop.trigger({"n": 1})))
            writer.start()
            time.sleep(0.3)  # the write is retrying the locked database by now
            assert other_process.acquire(time.monotonic() + 2)
            other_process.release()
            assert writer.is_alive(), "the write waited for SQLite's lock, not for the turn"
        writer.join(WAIT)
    finally:
        other_process.close()
    assert not writer.is_alive()
    assert [durably.get_run(run.id) is not None for run in triggered] == [True]
