"""Bugs the crash suite found, each pinned by the reproduction that first showed it.

Each docstring says what used to happen; the assertions say what must.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from durably import Durably, StepContext, testing
from durably.events import Event
from durably.schema import runs as runs_table
from tests.faults import refuse_first_step_write

from .harness import WAIT, prefix_enforcing_file_modes, url_for

pytestmark = [pytest.mark.slow, pytest.mark.both_engines]


def _noop(durably: Durably) -> Any:
    @durably.job("noop")
    def noop(step: StepContext, input: Any) -> Any:
        return step.run("only", lambda: input)

    return noop


def test_a_heartbeat_racing_the_runs_own_completion_reports_no_lost_lease(
    durably: Durably,
) -> None:
    """A heartbeat tick takes its snapshot of the held leases; the run completes
    (status 'completed', lease cleared) before the tick's renewal transaction
    runs; the renewal matches no row, and ``LeaseService.heartbeat`` classifies
    every non-cancelled miss as LEASE_LOST, so ``Heartbeat.beat`` emits
    ``worker:error`` "Lease renewal lost ownership for run ..." for a run this
    very lease completed. Seen three times in one 500-run test_competing.py
    run: a false alarm for anyone alerting on worker errors. The listener below
    makes the tick land in that window deterministically (the lease leaves
    ``runtime.leases`` only after ``run:complete`` is emitted).
    """
    errors: list[Event] = []
    durably.on("worker:error", errors.append)
    durably.on("run:complete", lambda event: testing.renew_leases(durably))
    run = _noop(durably).trigger("x")

    assert durably.process_one()

    assert durably.get_run(run.id).status == "completed"  # type: ignore[union-attr]
    assert [e.error for e in errors] == []


def test_a_database_error_while_storing_a_step_result_does_not_fail_the_run(
    durably: Durably, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Execution.run_step`` calls ``persist_step`` outside any handler: a
    ``DatabaseLockedError`` (the file stayed locked longer than
    ``lock_timeout``) or a ``DatabaseError`` (read-only, I/O error) raised
    while storing a *successful* step's result propagates into the job as if
    the job had raised, and ``settle_error`` fails the run with
    "DatabaseLockedError: ..." as soon as the database accepts the ``fail``
    write. Realistically: another process holds the write lock for between
    ``lock_timeout`` and twice that. A failed run stays failed until someone
    calls ``retry``, although the job did nothing wrong, while every other
    database problem (claim, heartbeat, lost lease) only delays the run.
    Here the first result write raises, as it does when the lock outlives
    ``lock_timeout``.
    """
    attempts = refuse_first_step_write(testing.lease_service(durably), monkeypatch)
    run = _noop(durably).trigger("x")
    durably.process_one()

    assert attempts == ["only"], "the step result write was attempted once, and refused"
    after = durably.get_run(run.id)
    assert after is not None
    assert after.status != "failed", after.error


def test_a_run_with_corrupted_labels_fails_instead_of_poisoning_the_queue(
    durably: Durably,
) -> None:
    """``LeaseService.claim`` commits the claim, then decodes the run's labels
    with ``serialization.loads`` (leases.py, ``_labels``): corrupted labels
    raise a raw ``json.JSONDecodeError`` out of ``claim`` *after* the lease was
    taken. ``process_one`` raises it (not a ``DurablyError``); a worker reports
    ``worker:error`` (context "claim") and backs off, and the run stays leased
    with nobody executing it, is reclaimed every ``stale_threshold``, fails the
    claim again, forever (``lease_generation`` keeps growing). A corrupted
    input, by contrast, fails its run with a clear error.
    """
    job = _noop(durably)
    bad = job.trigger("bad", labels={"team": "a"})
    testing.database(durably).write(
        lambda conn: conn.execute(
            runs_table.update().where(runs_table.c.id == bad.id).values(labels="{not json")
        )
    )

    assert durably.process_one()

    failed = durably.get_run(bad.id)
    assert failed is not None
    assert failed.status == "failed"


READ_ONLY_POOL = """
import json, os, sys
from durably import Durably
url, path = sys.argv[1], sys.argv[2]
durably = Durably(url)
durably.migrate()
job = durably.job("noop")(lambda step, input: input)
job.trigger(0)
os.chmod(path, 0o444)
# A burst of concurrent work opens more connections than the pool holds, as a
# worker with several slots does: they open read-only, without an error.
held = [durably.engine.connect() for _ in range(4)]
for conn in held:
    conn.close()
os.chmod(path, 0o644)  # the fault is over
errors = []
for n in range(20):
    try:
        job.trigger(n)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
durably.close()
print(json.dumps(errors))
"""


def test_connections_opened_while_the_file_was_read_only_do_not_outlive_the_fault(
    tmp_path: Path, driver: str
) -> None:
    """SQLite (and libSQL) open a file they may not write *read-only*, without
    an error. A connection opened during a read-only spell (pool growth) is
    kept by the pool after the file is writable again, and every write that
    draws it fails with "attempt to write a readonly database" for the life
    of the process: here 15 writes of 20 after the fault cleared. Nothing in
    durably notices, since the error is not a "disconnect" to SQLAlchemy.
    """
    prefix = prefix_enforcing_file_modes(tmp_path)
    path = tmp_path / "durably.db"
    result = subprocess.run(
        [*prefix, sys.executable, "-c", READ_ONLY_POOL, url_for(driver, path), str(path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert json.loads(result.stdout) == []
