"""Step attempts keyed by run, lease generation and step index

An attempt is now written once, with its outcome, or first as ``started``
by a heartbeat that finds its step running (``durably/core/attempts.py``).
Both writers address it by ``(run_id, lease_generation, step_index)``,
which a lease generation runs at most once: a unique index on that key
replaces the index on ``(run_id, id)`` and serves a run's reads in order.

Revision ID: durably_0009
Revises: durably_0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "durably_0009"
down_revision: str | None = "durably_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ux_durably_step_attempts_run_step",
        "durably_step_attempts",
        ["run_id", "lease_generation", "step_index"],
        unique=True,
    )
    op.drop_index("ix_durably_step_attempts_run_id", table_name="durably_step_attempts")


def downgrade() -> None:
    op.create_index(
        "ix_durably_step_attempts_run_id", "durably_step_attempts", ["run_id", "id"]
    )
    op.drop_index("ux_durably_step_attempts_run_step", table_name="durably_step_attempts")
