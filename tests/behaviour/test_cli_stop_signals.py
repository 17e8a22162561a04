"""``durably worker`` stops on SIGTERM whenever it comes, even while its threads are busy.

The worker's main thread waits for the signal with
:class:`durably.cli.worker.StopSignals`. Python runs a signal handler in the
main thread between two bytecodes; a handler that took a lock (as
``threading.Event.set`` does) would wait forever when the signal comes while
the main thread holds that same lock, and a wait without a timeout can miss
a signal that falls just before it blocks. Threads contending for the GIL
widen both windows; a crash test's worker hung so.

The race is run here many times in one process: a busy thread, and a
SIGTERM sent to the process at a random moment as the main thread starts
waiting. A wait on a ``threading.Event`` set by the handler hangs in most
runs of this script.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

ROUNDS = 1000
ROUND_LIMIT = 15
"""Seconds one round may take before the script calls its SIGTERM lost."""

SCRIPT = textwrap.dedent(
    f"""
    import os, random, signal, sys, threading, time
    from durably.cli.worker import StopSignals

    def busy():
        while True:
            sum(range(1000))

    STOPS = (signal.SIGTERM, signal.SIGINT)
    before = [signal.getsignal(signum) for signum in STOPS]  # SIGINT is ignored in a background job
    sys.setswitchinterval(0.0005)  # the GIL changes hands often: more moments to fall on
    threading.Thread(target=busy, daemon=True).start()

    def send_later(delay):
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGTERM)

    round_began = [time.monotonic()]

    def watchdog():  # a round is a few milliseconds, however loaded the machine
        while time.monotonic() - round_began[0] < {ROUND_LIMIT}:
            time.sleep(1)
        print("a SIGTERM was never seen", flush=True)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    for _ in range({ROUNDS}):
        round_began[0] = time.monotonic()
        with StopSignals() as signals:
            threading.Thread(target=send_later, args=(random.random() / 500,)).start()
            assert signals.wait() == signal.SIGTERM
    with StopSignals() as signals:  # a signal that came before wait() is kept for it
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert signals.wait() == signal.SIGINT
    assert [signal.getsignal(signum) for signum in STOPS] == before  # the old handlers are back
    print("stopped every time")
    """
)


@pytest.mark.timeout(300)
def test_the_worker_s_wait_for_a_stop_signal_ends_however_the_signal_falls() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "stopped every time"), done.stderr
