"""``durably schedules list|pause|resume|trigger``: the stored schedules, from the database.

Schedules are declared in the app's code; what is stored (and what these
commands see and change) is what the app's processes declared. Pausing
holds a schedule in every process until it is resumed.
"""

from __future__ import annotations

import argparse

from ..models import Schedule
from . import output
from .common import EXIT_OK, opened


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
    json_flag: argparse.ArgumentParser,
) -> None:
    schedules = commands.add_parser(
        "schedules", help="list, pause, resume, trigger or delete schedules"
    )
    actions = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[database, json_flag], help="every schedule")
    listing.set_defaults(handler=list_schedules)
    for name, text in (
        ("pause", "stop its ticks making runs, in every process"),
        ("resume", "tick again from now (the ticks missed meanwhile are not run)"),
        ("trigger", "one run of its job now, outside the timetable"),
        ("delete", "delete a schedule removed from the app's code (its runs stay)"),
    ):
        action = actions.add_parser(name, parents=[database, json_flag], help=text)
        action.add_argument("name", metavar="NAME")
        action.set_defaults(handler=change_schedule, change=name)


def list_schedules(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        schedules = durably.get_schedules()
    if args.json:
        output.print_json(schedules)
        return EXIT_OK
    output.print_table(
        ("NAME", "JOB", "TIMETABLE", "STATE", "LAST TICK", "NEXT TICK"),
        (
            (
                schedule.name,
                schedule.job_name,
                _timetable(schedule),
                "paused" if schedule.paused else "active",
                output.when(schedule.last_tick),
                output.when(schedule.next_tick),
            )
            for schedule in schedules
        ),
        empty="no schedules stored",
    )
    return EXIT_OK


def change_schedule(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        if args.change == "trigger":
            run = durably.trigger_schedule(args.name)
            if args.json:
                output.print_json(run)
            else:
                print(f"triggered {run.id} (job {run.job_name}) from schedule {args.name}")
            return EXIT_OK
        if args.change == "delete":
            durably.delete_schedule(args.name)
            if args.json:
                output.print_json({"deleted": args.name})
            else:
                print(f"deleted schedule {args.name}")
            return EXIT_OK
        change = durably.pause_schedule if args.change == "pause" else durably.resume_schedule
        schedule = change(args.name)
    if args.json:
        output.print_json(schedule)
    else:
        print(f"{'paused' if schedule.paused else 'resumed'} {schedule.name}")
    return EXIT_OK


def _timetable(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    every = schedule.every.total_seconds() if schedule.every is not None else 0
    return f"every {every:g}s"
