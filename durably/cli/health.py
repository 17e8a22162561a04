"""``durably workers`` and ``durably stats``: is anything processing, and is it keeping up?

durably workers     # every registered worker engine, live or stale
durably stats       # pending, running and stale runs, the oldest pending run's age
"""

from __future__ import annotations

import argparse

from . import output
from .common import EXIT_OK, opened


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
    json_flag: argparse.ArgumentParser,
) -> None:
    workers = commands.add_parser(
        "workers", parents=[database, json_flag], help="worker engines and their last heartbeat"
    )
    workers.set_defaults(handler=list_workers)
    stats = commands.add_parser(
        "stats", parents=[database, json_flag], help="queue depth: pending, running, stale runs"
    )
    stats.set_defaults(handler=show_stats)


def list_workers(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        workers = durably.get_workers()
    if args.json:
        output.print_json(workers)
        return EXIT_OK
    output.print_table(
        ("ID", "ENGINE", "HOST", "PID", "STARTED", "LAST HEARTBEAT", "STATE"),
        (
            (
                worker.id,
                worker.engine,
                worker.host,
                str(worker.pid),
                output.when(worker.started_at),
                output.when(worker.last_heartbeat_at),
                "stale" if worker.is_stale else "live",
            )
            for worker in workers
        ),
        empty="no workers registered",
    )
    return EXIT_OK


def show_stats(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        stats = durably.get_queue_stats()
    if args.json:
        output.print_json(stats)
        return EXIT_OK
    output.print_fields(
        [
            ("pending", str(stats.pending)),
            ("running", str(stats.running)),
            ("stale (lease expired)", str(stats.stale)),
            ("oldest pending", output.seconds(stats.oldest_pending_age)),
        ]
    )
    return EXIT_OK
