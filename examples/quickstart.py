"""The durably quick start: a worker processing a real multi-step job on an embedded SQLite file.

Run it with `make run` (or `python examples/quickstart.py`). It migrates
./durably-demo.db, starts a thread worker and triggers a job that measures
the Python standard library's source: it lists the modules, counts their
lines in chunks (one durable step per chunk, with progress), then writes a
report. Interrupt it (Ctrl-C) and run it again: the run resumes from the
chunks it had already counted instead of starting over.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from durably import Durably, Event, StepContext

DATABASE_URL = "sqlite:///durably-demo.db"
CHUNK = 25

durably = Durably(DATABASE_URL, polling_interval=0.2)


@durably.job("stdlib-report")
def stdlib_report(step: StepContext, input: dict[str, str]) -> dict[str, object]:
    root = Path(input["root"])
    files = step.run(
        "list-modules", lambda: sorted(str(p.relative_to(root)) for p in root.glob("*.py"))
    )
    total_lines = 0
    chunks = range(0, len(files), CHUNK)
    for number, start in enumerate(chunks, 1):
        batch = files[start : start + CHUNK]
        total_lines += step.run(
            f"count-{start}",
            lambda batch=batch: sum(
                len((root / name).read_text(errors="replace").splitlines()) for name in batch
            ),
        )
        step.progress(number, len(chunks), f"counted {min(start + CHUNK, len(files))} modules")
    biggest = step.run(
        "biggest",
        lambda: max(files, key=lambda name: (root / name).stat().st_size),
    )
    step.log.info("report ready", {"modules": len(files)})
    return {"modules": len(files), "lines": total_lines, "biggest": biggest}


def show(event: Event) -> None:
    if event.type == "run:progress":
        progress = event.progress
        print(f"  progress {progress.current}/{progress.total}: {progress.message}")
    elif event.type == "step:complete":
        print(f"  step {event.step_name!r} done")


def print_next_steps(run_id: str) -> None:
    """Where to look next: what was stored, and the commands that read it."""
    command = Path(sys.executable).with_name("durably")
    cli = str(command) if command.exists() else "durably"
    if command.exists() and not os.path.relpath(command).startswith(".."):
        cli = os.path.relpath(command)  # .venv/bin/durably, from the clone's root
    url = f"--url {DATABASE_URL}"
    print(
        "\nWhat next:\n"
        f"  the database   {Path(DATABASE_URL.removeprefix('sqlite:///')).resolve()}\n"
        f"  its runs       {cli} runs list {url}\n"
        f"  this run       {cli} runs show {run_id} {url}\n"
        f"  queue depth    {cli} stats {url}\n"
        "  the docs       docs/quickstart.md, then docs/concepts.md and docs/operations.md"
    )


def main() -> int:
    durably.migrate()
    durably.on("run:progress", show)
    durably.on("step:complete", show)
    durably.start()
    try:
        root = sysconfig.get_paths()["stdlib"]
        run = stdlib_report.trigger({"root": root}, idempotency_key=f"report:{root}")
        print(f"run {run.id} ({run.disposition}) for {root}")
        if run.status == "completed":
            print("already completed earlier; stored result:")
        done = durably.wait_for_run(run.id, timeout=300)
        print(f"result: {done.output}")
        print_next_steps(run.id)
    except KeyboardInterrupt:
        # Hand the run back at its next step boundary: the next start resumes it.
        durably.stop(timeout=0)
        print("interrupted; run me again to resume")
        return 130
    finally:
        durably.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
