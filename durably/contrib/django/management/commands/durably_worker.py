"""``manage.py durably_worker``: run the project's jobs and tasks until SIGTERM or Ctrl-C."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from .....config import DEFAULT_SIGNAL_STOP_TIMEOUT
from .....errors import ValidationError
from .....facade.processing import check_queues
from ...conf import get_durably
from ..base import DurablyCommand


class Command(DurablyCommand):
    help = (
        "Run a durably worker (the thread engine) for the project's jobs and tasks until "
        "SIGTERM or Ctrl-C; in-flight runs then finish or are handed back."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--migrate", action="store_true", help="Migrate before starting.")
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="Serve only this queue (repeat for several; default: every queue).",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=DEFAULT_SIGNAL_STOP_TIMEOUT,
            help="Seconds in-flight runs get after SIGTERM before they are handed back "
            f"(default {DEFAULT_SIGNAL_STOP_TIMEOUT:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from .....cli.worker import configure_logging, run_until_signalled
        from .....worker_log import log_worker_events

        try:
            queues = check_queues(options["queues"])
        except ValidationError as exc:  # a bad --queue: one line, no traceback
            raise CommandError(str(exc)) from None
        durably = get_durably()  # settings.DURABLY is checked (DurablyCommand)
        log = configure_logging("info")
        if options["migrate"]:
            durably.migrate()
        log_worker_events(durably.on, log)
        run_until_signalled(durably, options["shutdown_timeout"], queues, log)
