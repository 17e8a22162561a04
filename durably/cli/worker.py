"""``durably migrate`` and ``durably worker``: prepare the database, run a worker process.

    durably migrate --url sqlite:///app.db
    durably worker myapp.jobs:durably          # runs until SIGTERM / Ctrl-C
    durably worker myapp.jobs:durably --engine asyncio

A worker process stops gracefully on SIGTERM or SIGINT: it stops claiming,
lets in-flight runs finish (up to ``--shutdown-timeout`` seconds), then
hands any still-running run back so another worker resumes it at once. It
logs on the ``durably`` logger (:mod:`durably.worker_log`): its start and
stop, every failed run with its traceback, retries, lost leases, and the
errors it survives.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from types import FrameType

from ..app import Durably
from ..facade.processing import check_queues
from ..facade.signals import STOP_SIGNALS
from ..storage.urls import display_url
from ..worker_log import LOGGER_NAME, log_worker_events
from .common import EXIT_OK, load_app, opened

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
) -> None:
    migrate = commands.add_parser(
        "migrate", parents=[database], help="create or upgrade durably's tables"
    )
    migrate.set_defaults(handler=migrate_database)

    worker = commands.add_parser("worker", help="run a worker until SIGTERM")
    worker.add_argument("app", metavar="APP", help="MODULE:ATTRIBUTE of your Durably instance")
    worker.add_argument(
        "--engine",
        choices=("thread", "asyncio"),
        default="thread",
        help="worker engine (both run def and async def jobs; default: thread)",
    )
    worker.add_argument("--migrate", action="store_true", help="migrate before starting")
    worker.add_argument(
        "--queue",
        action="append",
        metavar="NAME",
        help="serve only this queue (repeatable; default: every queue of the app's jobs)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=None,
        help="seconds to wait for in-flight runs on shutdown (default: until they finish)",
    )
    worker.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="the durably logger's level (debug adds a line per run started and completed)",
    )
    worker.set_defaults(handler=run_worker)


def migrate_database(args: argparse.Namespace) -> int:
    with opened(args, create=True) as durably:
        durably.migrate()
        shown = display_url(durably.engine.url)
    print(f"durably: schema is up to date ({shown})")
    return EXIT_OK


def run_worker(args: argparse.Namespace) -> int:
    queues = check_queues(args.queue)  # refused before anything touches the database
    durably = load_app(args.app)
    log = configure_logging(args.log_level)
    if args.migrate:
        durably.migrate()
    log_worker_events(durably.on, log)
    if args.engine == "asyncio":
        asyncio.run(_asyncio_worker(durably, args.shutdown_timeout, queues, log))
    else:
        run_until_signalled(durably, args.shutdown_timeout, queues, log)
    return EXIT_OK


def run_until_signalled(
    durably: Durably,
    shutdown_timeout: float | None,
    queues: frozenset[str] | None,
    log: logging.Logger,
) -> None:
    """Run the thread engine (already started is fine) until SIGTERM or SIGINT, then stop it."""
    with StopSignals() as signals:
        if not durably.is_running:
            durably.start(queues=queues)
        _started(log, durably)
        signals.wait()
        log.info("worker %s stopping", durably.worker_id)
        durably.stop(timeout=shutdown_timeout)
        durably.close()
    log.info("worker %s stopped", durably.worker_id)


class StopSignals:
    """SIGTERM and SIGINT, waited for by the main thread without taking a lock.

    Python runs a signal handler in the main thread between two bytecodes,
    so a handler that sets a ``threading.Event`` the main thread waits on
    fails in two ways: the signal falls while the main thread holds the
    event's lock (the handler then waits for itself forever), or just before
    the wait blocks (the wait then never wakes for the handler to run).
    Either way the worker never stops. So the handlers installed here do
    nothing; the signal's number reaches :meth:`wait` through the wake-up file
    descriptor that Python's C-level handler writes to (as asyncio's signal
    handling does). A signal that comes before :meth:`wait` is kept until then.
    """

    def __enter__(self) -> StopSignals:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, _let_through) for signum in STOP_SIGNALS}
        return self

    def wait(self) -> int:
        """Block until SIGTERM or SIGINT comes (or came); returns its number."""
        while True:
            for signum in self._reader.recv(64):  # one byte per signal handled
                if signum in STOP_SIGNALS:
                    return signum

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


def _let_through(_signum: int, _frame: FrameType | None) -> None:
    """The signal is delivered through the wake-up file descriptor (:class:`StopSignals`)."""


async def _asyncio_worker(
    durably: Durably,
    shutdown_timeout: float | None,
    queues: frozenset[str] | None,
    log: logging.Logger,
) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await durably.start_async(queues=queues)
    _started(log, durably)
    await stopping.wait()
    log.info("worker %s stopping", durably.worker_id)
    await durably.stop_async(timeout=shutdown_timeout)
    await durably.close_async()
    log.info("worker %s stopped", durably.worker_id)


def _started(log: logging.Logger, durably: Durably) -> None:
    log.info(
        "worker %s started (%s engine, %s, jobs: %s)",
        durably.worker_id,
        durably.engine_name,
        display_url(durably.engine.url),
        ", ".join(sorted(durably.jobs)) or "none",
    )


def configure_logging(level: str) -> logging.Logger:
    """Records of durably's logger at ``level``; other libraries' (Alembic's INFO lines about
    its migration context) only from WARNING: a worker's output is about its runs."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(level.upper())
    return log
