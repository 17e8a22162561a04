"""Flask: an extension for the app-factory pattern, and ``flask durably`` commands.

    from durably.contrib.flask import FlaskDurably

    extension = FlaskDurably(durably)        # durably: your module's Durably, with its jobs

    def create_app():
        app = Flask(__name__)
        extension.init_app(app)               # app.extensions["durably"], `flask durably …`
        return app

``flask --app myapp durably worker`` runs a worker process (the thread
engine) until SIGTERM; ``flask durably migrate`` migrates. With
``start_worker=True`` (or ``DURABLY_START_WORKER = True`` in the app's
config) each process that builds the app also runs an engine in its own
threads, stopped when the process exits: for ``flask run`` and for gunicorn,
whose workers each build the app after the fork (threads do not survive a
fork, so never with ``--preload``). The jobs' code lives where the
``Durably`` does; the extension only connects it to the app.
"""

from __future__ import annotations

import atexit
from typing import Any

from ..app import Durably
from ..config import DEFAULT_SIGNAL_STOP_TIMEOUT
from ..errors import DurablyError

__all__ = ["FlaskDurably", "current_durably"]

EXTENSION_KEY = "durably"
START_WORKER = "DURABLY_START_WORKER"


class FlaskDurably:
    """Connects one ``Durably`` to Flask apps (``init_app``, as Flask extensions do)."""

    def __init__(
        self,
        durably: Durably,
        app: Any = None,
        *,
        migrate: bool = True,
        start_worker: bool = False,
        stop_timeout: float | None = DEFAULT_SIGNAL_STOP_TIMEOUT,
    ) -> None:
        self.durably = durably
        self.migrate = migrate
        self.start_worker = start_worker
        self.stop_timeout = stop_timeout
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Register the ``Durably`` on ``app`` and its commands; start an engine if asked to.

        Building the app again in the same process (tests, the CLI) starts no
        second engine.
        """
        app.extensions[EXTENSION_KEY] = self.durably
        app.cli.add_command(_commands(self))
        if app.config.get(START_WORKER, self.start_worker) and not self.durably.is_running:
            if self.migrate:
                self.durably.migrate()
            self.durably.start()
            atexit.register(self.durably.stop, timeout=self.stop_timeout)


def current_durably() -> Durably:
    """The ``Durably`` of the app handling this request (or of the app context)."""
    from flask import current_app

    durably = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(durably, Durably):
        raise DurablyError(
            "No Durably on this Flask app: call FlaskDurably(...).init_app(app) in its factory"
        )
    return durably


def _commands(extension: FlaskDurably) -> Any:
    """``flask durably worker`` and ``flask durably migrate`` (click, which Flask brings)."""
    import click
    from flask.cli import AppGroup

    group = AppGroup("durably", help="durably's worker and migrations.")

    @group.command("migrate")
    def migrate() -> None:
        """Create or upgrade durably's tables."""
        extension.durably.migrate()
        click.echo("durably: migrated")

    @group.command("worker")
    @click.option("--migrate", "run_migrate", is_flag=True, help="Migrate before starting.")
    @click.option(
        "--shutdown-timeout", type=float, default=None, help="Seconds for in-flight runs."
    )
    def worker(run_migrate: bool, shutdown_timeout: float | None) -> None:
        """Run a worker until SIGTERM or Ctrl-C (in-flight runs finish or are handed back)."""
        from ..cli.worker import configure_logging, run_until_signalled
        from ..worker_log import log_worker_events

        durably = extension.durably
        log = configure_logging("info")
        if run_migrate:
            durably.migrate()
        log_worker_events(durably.on, log)
        run_until_signalled(durably, shutdown_timeout, None, log)

    return group
