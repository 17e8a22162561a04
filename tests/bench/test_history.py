"""The benchmark's prepared databases: rows written straight into the tables, as durably would."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import history
from bench.apps import JOB, AppConfig, build
from durably import RunStatus


def test_prepared_history_and_pending_runs_are_runs_durably_reads_and_claims(
    tmp_path: Path,
) -> None:
    # The inserts name columns themselves: a column added to the schema must
    # not break them (W5 stopped at recovery_count once), and what they write
    # must be runs a worker claims.
    path = tmp_path / "bench.db"
    shutil.copy(history._build_template(5), path)
    history.insert_pending(path, 3)
    with build(AppConfig(f"sqlite:///{path}")) as durably:
        assert len(durably.get_runs(status="completed")) == 5
        pending = durably.get_runs(status="pending")
        assert len(pending) == 3
        assert all(run.job_name == JOB and run.run_at == run.created_at for run in pending)
        assert durably.process_until_idle() == 3
        assert {run.status for run in durably.get_runs()} == {RunStatus.COMPLETED}
