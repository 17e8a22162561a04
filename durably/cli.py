"""``durably`` command line: migrate a database, run a worker process.

    durably migrate --url sqlite:///app.db
    durably worker myapp.jobs:durably          # runs until SIGTERM / Ctrl-C
    durably worker myapp.jobs:durably --engine asyncio

A worker process stops gracefully on SIGTERM or SIGINT: it stops claiming,
lets in-flight runs finish (up to ``--shutdown-timeout`` seconds), then
hands any still-running run back so another worker resumes it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .app import Durably
from .errors import DurablyError, ValidationError
from .facade.processing import check_queues
from .storage.urls import ENV_URL, display_url, url_from_env


def load_app(spec: str) -> Durably:
    """Import ``module:attribute`` and return the ``Durably`` instance it names."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected module:attribute, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, Durably):
        raise SystemExit(f"{spec} is not a durably.Durably instance")
    return app


def _migrate(args: argparse.Namespace) -> int:
    environ = dict(os.environ)
    if args.url:
        environ[ENV_URL] = args.url
    try:
        url, token = url_from_env(environ)
    except ValidationError as exc:
        raise SystemExit(f"give --url or set {ENV_URL}: {exc}") from None
    with Durably(url, auth_token=token) as durably:
        durably.migrate()
        shown = display_url(durably.engine.url)
    print(f"durably: schema is up to date ({shown})")
    return 0


def _worker(args: argparse.Namespace) -> int:
    queues = check_queues(args.queue)  # refused before anything touches the database
    durably = load_app(args.app)
    if args.migrate:
        durably.migrate()
    log = logging.getLogger("durably")
    durably.on(
        "worker:error",
        lambda event: log.warning(
            "worker error (%s, run %s): %s", event.context, event.run_id, event.error
        ),
    )
    if args.engine == "asyncio":
        asyncio.run(_asyncio_worker(durably, args.shutdown_timeout, queues, log))
        return 0
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    durably.start(queues=queues)
    log.info("worker %s started (thread engine)", durably.worker_id)
    stopping.wait()
    durably.stop(timeout=args.shutdown_timeout)
    durably.close()
    return 0


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
    log.info("worker %s started (asyncio engine)", durably.worker_id)
    await stopping.wait()
    await durably.stop_async(timeout=shutdown_timeout)
    await durably.close_async()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="durably", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="create or upgrade durably's tables")
    migrate.add_argument(
        "--url", help="database URL (default: $DURABLY_DATABASE_URL, then $TURSO_DATABASE_URL)"
    )
    migrate.set_defaults(handler=_migrate)

    worker = commands.add_parser("worker", help="run a worker until SIGTERM")
    worker.add_argument("app", help="module:attribute of your Durably instance")
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
    worker.set_defaults(handler=_worker)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return int(args.handler(args))
    except DurablyError as exc:
        print(f"durably: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
