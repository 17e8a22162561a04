"""a completed step advances its run's counters (trigger)

Storing a step result was two statements in one transaction: the fenced
step insert and an ``UPDATE`` of the run's ``current_step_index``,
``completed_step_count`` and ``updated_at``. The trigger makes the update
part of the insert, so storing a step is one statement.

Revision ID: durably_0003
Revises: durably_0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "durably_0003"
down_revision: str | None = "durably_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite() -> bool:
    """The trigger was SQLite's alone, and 0005 dropped it: other databases never had it."""
    return bool(op.get_bind().dialect.name == "sqlite")


def upgrade() -> None:
    if not _sqlite():
        return
    op.execute(
        """\
CREATE TRIGGER durably_steps_advance_run
AFTER INSERT ON durably_steps
WHEN NEW.status = 'completed'
BEGIN
    UPDATE durably_runs
    SET current_step_index = NEW.step_index + 1,
        completed_step_count = completed_step_count + 1,
        updated_at = NEW.completed_at
    WHERE id = NEW.run_id;
END"""
    )


def downgrade() -> None:
    if not _sqlite():
        return
    op.execute("DROP TRIGGER durably_steps_advance_run")
