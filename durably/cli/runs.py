"""``durably runs …`` and ``durably purge``: find runs, look into one, change them.

    durably runs list --status failed --job sync-users
    durably runs show 01JD…                 # steps, progress, logs, attempts with tracebacks
    durably runs retry --all-failed --job sync-users
    durably runs cancel 01JD… 01JE…
    durably purge --older-than 30d

Commands that take several ids change each one they can and report each one
they cannot (unknown, or in a state that forbids the change) on stderr; the
exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from .. import config
from ..app import Durably
from ..errors import ConflictError, NotFoundError
from ..models import Run
from ..status import RunStatus
from . import output
from .common import EXIT_OK, Failure, UsageError, opened
from .show import show_run


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
    json_flag: argparse.ArgumentParser,
) -> None:
    runs = commands.add_parser("runs", help="list, inspect, retry, cancel or delete runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list", parents=[database, json_flag], help="runs, newest first, filtered"
    )
    listing.add_argument(
        "--status", action="append", choices=[s.value for s in RunStatus], help="(repeatable)"
    )
    listing.add_argument("--job", action="append", metavar="NAME", help="(repeatable)")
    listing.add_argument(
        "--label", action="append", metavar="KEY=VALUE", help="runs with all these labels"
    )
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=config.DEFAULT_LIST_LIMIT,
        help=f"(default: {config.DEFAULT_LIST_LIMIT})",
    )
    listing.set_defaults(handler=list_runs)

    show = actions.add_parser(
        "show", parents=[database, json_flag], help="one run: steps, progress, logs, attempts"
    )
    show.add_argument("run_id", metavar="ID")
    show.set_defaults(handler=show_run)

    retry = actions.add_parser(
        "retry", parents=[database, json_flag], help="resume failed or cancelled runs"
    )
    retry.add_argument("run_ids", metavar="ID", nargs="*")
    retry.add_argument("--all-failed", action="store_true", help="every failed run")
    retry.add_argument("--job", action="append", metavar="NAME", help="with --all-failed")
    retry.set_defaults(handler=retry_runs)

    for name, handler, text in (
        ("cancel", cancel_runs, "cancel pending or running runs"),
        ("delete", delete_runs, "delete finished runs with their steps and logs"),
    ):
        action = actions.add_parser(name, parents=[database, json_flag], help=text)
        action.add_argument("run_ids", metavar="ID", nargs="+")
        action.set_defaults(handler=handler)

    retrigger = actions.add_parser(
        "retrigger", parents=[database, json_flag], help="a new run with a finished run's input"
    )
    retrigger.add_argument("run_id", metavar="ID")
    retrigger.set_defaults(handler=retrigger_run)
    _add_purge(commands, database, json_flag)


def _add_purge(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
    json_flag: argparse.ArgumentParser,
) -> None:
    purge = commands.add_parser(
        "purge", parents=[database, json_flag], help="delete finished runs older than a duration"
    )
    purge.add_argument(
        "--older-than", required=True, metavar="DURATION", help='e.g. "30d", "24h", "90m"'
    )
    purge.set_defaults(handler=purge_runs)


def list_runs(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        runs = durably.get_runs(
            status=args.status,
            job_name=args.job,
            labels=_labels(args.label or []),
            limit=args.limit,
        )
    if args.json:
        output.print_json(runs)
        return EXIT_OK
    now = datetime.now(timezone.utc)
    output.print_table(
        ("ID", "JOB", "STATUS", "ATTEMPT", "QUEUE", "CREATED", "ERROR"),
        (
            (
                run.id,
                run.job_name,
                output.status_text(run, now),
                str(run.attempt),
                run.queue,
                output.when(run.created_at),
                output.short(run.error),
            )
            for run in runs
        ),
        empty="no runs",
    )
    return EXIT_OK


def retry_runs(args: argparse.Namespace) -> int:
    if args.all_failed == bool(args.run_ids):
        raise UsageError("give run ids or --all-failed (not both)")
    if args.job and not args.all_failed:
        raise UsageError("--job goes with --all-failed")
    with opened(args) as durably:
        ids = args.run_ids
        if args.all_failed:
            failed = durably.get_runs(status=RunStatus.FAILED, job_name=args.job)
            ids = [run.id for run in failed]
        return _each(ids, durably.retry, "retried", args.json)


def cancel_runs(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        return _each(args.run_ids, durably.cancel, "cancelled", args.json)


def delete_runs(args: argparse.Namespace) -> int:
    with opened(args) as durably:

        def delete(run_id: str) -> None:
            durably.delete_run(run_id)

        return _each(args.run_ids, delete, "deleted", args.json)


def retrigger_run(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        run = _retrigger(durably, args.run_id, registered_only=bool(args.app))
    if args.json:
        output.print_json(run)
    else:
        print(f"triggered {run.id} (job {run.job_name}), a new run with the input of {args.run_id}")
    return EXIT_OK


def _retrigger(durably: Durably, run_id: str, *, registered_only: bool) -> Run:
    """Without ``--app`` the job need not be registered here: the run copies its queue."""
    return durably._retrigger(run_id, registered_only=registered_only)


def purge_runs(args: argparse.Namespace) -> int:
    age = config.parse_duration(args.older_than, "--older-than")
    with opened(args) as durably:
        cutoff = datetime.now(timezone.utc) - age
        purged = 0
        while True:  # in batches: each is one short write transaction
            batch = durably.purge_runs(cutoff, config.DEFAULT_PURGE_LIMIT)
            purged += batch
            if batch < config.DEFAULT_PURGE_LIMIT:
                break
    if args.json:
        output.print_json({"purged": purged, "finished_before": cutoff})
    else:
        print(f"purged {purged} run(s) finished before {output.when(cutoff)}")
    return EXIT_OK


def _each(
    run_ids: Sequence[str], change: Callable[[str], Run | None], done: str, as_json: bool
) -> int:
    """Apply ``change`` to each id; report the ones refused, and exit 1 if any was."""
    changed: list[str] = []
    refused = 0
    for run_id in run_ids:
        try:
            change(run_id)
        except (NotFoundError, ConflictError) as exc:
            print(f"durably: {exc}", file=sys.stderr)
            refused += 1
            continue
        changed.append(run_id)
        if not as_json:
            print(f"{done} {run_id}")
    if as_json:
        output.print_json({done: changed})
    elif not run_ids:
        print(f"nothing {done}: no matching runs")
    if refused:
        raise Failure(f"{refused} of {len(run_ids)} run(s) not {done}")
    return EXIT_OK


def _labels(pairs: Sequence[str]) -> dict[str, str] | None:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label wants KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels or None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
