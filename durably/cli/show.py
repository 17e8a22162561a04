"""``durably runs show ID``: everything the database knows about one run.

What someone debugging a run needs on one screen: where it stands (status,
attempt, lease, progress), what it did (steps, logs), and why it failed (each
step attempt, with the traceback of the failed ones).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from ..errors import NotFoundError
from ..models import LogEntry, Run, Step, StepAttempt
from . import output
from .common import EXIT_OK, opened


def show_run(args: argparse.Namespace) -> int:
    with opened(args) as durably:
        run = durably.get_run(args.run_id)
        if run is None:
            raise NotFoundError(f"Run not found: {args.run_id}")
        steps = durably.get_steps(run.id)
        attempts = durably.get_step_attempts(run.id)
        logs = durably.get_logs(run.id)
    if args.json:
        output.print_json({"run": run, "steps": steps, "attempts": attempts, "logs": logs})
        return EXIT_OK
    _print_run(run)
    _print_steps(steps)
    _print_attempts(attempts)
    _print_logs(logs)
    return EXIT_OK


def _print_run(run: Run) -> None:
    lease = None
    if run.lease_owner:
        lease = f"{run.lease_owner} until {output.when(run.lease_expires_at)}"
    progress = None
    if run.progress is not None:
        total = "" if run.progress.total is None else f"/{run.progress.total}"
        message = f" {run.progress.message}" if run.progress.message else ""
        progress = f"{run.progress.current}{total}{message}"
    output.print_fields(
        [
            ("run", run.id),
            ("job", run.job_name),
            ("status", output.status_text(run, datetime.now(timezone.utc))),
            ("attempt", str(run.attempt)),
            ("queue", f"{run.queue} (priority {run.priority})"),
            ("labels", " ".join(f"{k}={v}" for k, v in sorted(run.labels.items()))),
            ("created", output.when(run.created_at)),
            ("run at", output.when(run.run_at)),
            ("started", output.when(run.started_at)),
            ("finished", output.when(run.completed_at)),
            ("lease", lease or ""),
            ("claims", f"{run.lease_generation} ({run.recovery_count} after a lost lease)"),
            ("progress", progress or ""),
            ("input", output.short(output.compact(run.input), 200)),
            ("output", "" if run.output is None else output.short(output.compact(run.output), 200)),
            ("error", run.error or ""),
        ]
    )


def _print_steps(steps: list[Step]) -> None:
    print("\nsteps")
    output.print_table(
        ("#", "NAME", "STATUS", "CLAIM", "FINISHED", "ERROR"),
        (
            (
                str(step.index),
                step.name,
                step.status.value,
                str(step.lease_generation),
                output.when(step.completed_at),
                output.short(step.error),
            )
            for step in steps
        ),
        empty="(no steps stored: none ran yet, or a completed run's steps were cleaned up)",
    )


def _print_attempts(attempts: list[StepAttempt]) -> None:
    print("\nstep attempts")
    output.print_table(
        ("STEP", "RUN ATTEMPT", "CLAIM", "STATUS", "STARTED", "ERROR"),
        (
            (
                attempt.step_name,
                str(attempt.run_attempt),
                str(attempt.lease_generation),
                attempt.status.value,
                output.when(attempt.started_at),
                output.short(attempt.error),
            )
            for attempt in attempts
        ),
        empty="(no step attempts)",
    )
    for attempt in attempts:
        if attempt.traceback:
            print(
                f"\ntraceback of step {attempt.step_name!r} "
                f"(run attempt {attempt.run_attempt}):\n{attempt.traceback.rstrip()}"
            )


def _print_logs(logs: list[LogEntry]) -> None:
    print("\nlogs")
    output.print_table(
        ("TIME", "LEVEL", "STEP", "MESSAGE", "DATA"),
        (
            (
                output.when(entry.created_at),
                entry.level.value,
                entry.step_name or "",
                entry.message,
                "" if entry.data is None else output.short(output.compact(entry.data), 80),
            )
            for entry in logs
        ),
        empty="(no logs)",
    )
