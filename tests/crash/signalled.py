"""A plain script running the crash suite's jobs, with durably's signal handlers.

    python -m tests.crash.signalled ENGINE TIMEOUT [--previous-handler]

What ``docs/web.md`` tells a script (or ``flask run``) to do: start the engine,
call ``durably.install_signal_handlers(TIMEOUT)``, then get on with its own
work, here sleeping forever. ``ENGINE`` is ``thread`` (``start()``, the main
thread sleeping) or ``asyncio`` (``start_async()`` inside
``asyncio.run``, the main thread running the loop).

With ``--previous-handler`` the script installs its own SIGTERM handler first;
it records whether the engine was still running when it was called, and exits
with status 0.

Appends to the side-effect log (:mod:`tests.crash.jobs`): ``ready`` once the
handlers are installed, ``previous-handler``, ``finally`` (the asyncio main
coroutine unwound) and ``atexit``.
"""

from __future__ import annotations

import asyncio
import atexit
import signal
import sys
import time
from types import FrameType

from tests.crash.jobs import durably, record


def _previous_handler(signum: int, _frame: FrameType | None) -> None:
    record("previous-handler", signum=signum, engine_running=durably.is_running)
    sys.exit(0)


def _wait_forever() -> None:
    # Short sleeps, not one wait without a timeout: a signal that falls just
    # before such a wait blocks would not interrupt it (docs/web.md).
    while True:
        time.sleep(0.5)


async def _main_async(timeout: float) -> None:
    await durably.start_async()
    durably.install_signal_handlers(timeout)
    record("ready", worker=durably.worker_id)
    try:
        await asyncio.Event().wait()
    finally:
        record("finally")


def main(argv: list[str]) -> None:
    engine, timeout = argv[0], float(argv[1])
    atexit.register(record, "atexit")
    if "--previous-handler" in argv:
        signal.signal(signal.SIGTERM, _previous_handler)
    if engine == "asyncio":
        asyncio.run(_main_async(timeout))
        return
    durably.start()
    durably.install_signal_handlers(timeout)
    record("ready", worker=durably.worker_id)
    _wait_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
