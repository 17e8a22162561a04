"""``durably.install_signal_handlers()``: a signal stops the engine, then goes on as before.

Signals are raised in this process with ``signal.raise_signal``, which runs
the Python handler before it returns; a signal that must fall while durably
holds its own locks is raised in a script of its own.
tests/crash/test_signal_handlers.py sends a real SIGTERM to a script with a
run in flight.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from durably import Durably, NotMainThreadError, ValidationError

pytestmark = pytest.mark.both_engines


@pytest.fixture(autouse=True)
def _keep_handlers() -> Iterator[None]:
    """Whatever a test installs, the process's own handlers are back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_stops_the_engine_then_calls_the_previous_handler(durably: Durably) -> None:
    calls: list[tuple[int, bool]] = []

    def previous(signum: int, _frame: FrameType | None) -> None:
        calls.append((signum, durably.is_running))

    signal.signal(signal.SIGTERM, previous)
    durably.start()
    assert len(durably.get_workers()) == 1
    restore = durably.install_signal_handlers(timeout=5)

    signal.raise_signal(signal.SIGTERM)

    assert calls == [(signal.SIGTERM, False)], "called once the engine had stopped"
    assert durably.get_workers() == []
    restore()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_without_a_previous_handler_sigterm_raises_system_exit_143(durably: Durably) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    durably.start()
    durably.install_signal_handlers(timeout=5)
    # Never raise SIGTERM at this process with the default action still in place.
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL

    with pytest.raises(SystemExit) as exited:
        signal.raise_signal(signal.SIGTERM)

    assert exited.value.code == 128 + signal.SIGTERM
    assert not durably.is_running
    assert durably.get_workers() == []


def test_sigint_stops_the_engine_then_raises_keyboard_interrupt(durably: Durably) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    durably.start()
    durably.install_signal_handlers(timeout=5)

    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)

    assert durably.get_workers() == []


def test_with_no_engine_running_the_signal_just_goes_on(durably: Durably) -> None:
    calls: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: calls.append(signum))
    durably.install_signal_handlers(signals=[signal.SIGTERM])

    signal.raise_signal(signal.SIGTERM)

    assert calls == [signal.SIGTERM]


def test_only_the_main_thread_installs_signal_handlers(durably: Durably) -> None:
    before = signal.getsignal(signal.SIGTERM)
    raised: list[BaseException] = []

    def install() -> None:
        try:
            durably.install_signal_handlers()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()

    assert [type(exc) for exc in raised] == [NotMainThreadError]
    assert "main thread" in str(raised[0])
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    "options",
    [{"timeout": -1}, {"timeout": None}, {"signals": []}, {"signals": ["TERM"]}],
    ids=["negative-timeout", "no-timeout", "no-signals", "not-a-signal"],
)
def test_bad_options_are_refused_and_install_nothing(
    durably: Durably, options: dict[str, object]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValidationError):
        durably.install_signal_handlers(**options)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) is before


SIGNAL_DURING_START = textwrap.dedent(
    """
    import signal, sys
    from sqlalchemy import event
    from durably import Durably

    durably = Durably(sys.argv[1])
    durably.migrate()
    durably.install_signal_handlers(timeout=0.5)
    checkouts = []

    @event.listens_for(durably.engine, "checkout")
    def sigterm_at_the_first(*_args):
        checkouts.append(1)
        if len(checkouts) == 1:  # inside start(), which holds the engine's lock
            signal.raise_signal(signal.SIGTERM)

    durably.start()
    print("start() returned")
    """
)


def test_a_signal_that_falls_inside_start_still_ends_the_process(tmp_path: Path) -> None:
    # The handler interrupts the main thread while start() holds a lock the stop
    # needs: stopping right there used to wait for itself forever.
    url = f"sqlite:///{tmp_path / 'app.db'}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SIGNAL_DURING_START, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process never ended")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "start() returned" not in done.stdout
    client = Durably(url)
    try:
        assert client.get_workers() == []
    finally:
        client.close()
