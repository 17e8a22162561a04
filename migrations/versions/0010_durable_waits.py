"""Durable waits: ``durably_waits`` and the index that claims waiting runs when they are due

``durably_waits`` holds the waits a job prepares (``step.prepare_wait``) and
its durable sleeps (``step.sleep``): one row per run and name, with its
deadline, its result (a signal's payload, or a timeout) and when the run
suspended on it, got its result and was resumed. A suspended run has the
new status ``waiting`` and its ``run_at`` set to when it wakes; the
partial index ``ix_durably_runs_waiting`` lets the claim find the waiting
runs that are due without touching the others.

Revision ID: durably_0010
Revises: durably_0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0010"
down_revision: str | None = "durably_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "durably_waits",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.Text()),
        sa.Column("payload", sa.Text()),
        sa.Column("signal_id", sa.String(255)),
        sa.Column("deadline_at", sa.BigInteger()),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("suspended_at", sa.BigInteger()),
        sa.Column("resolved_at", sa.BigInteger()),
        sa.Column("resumed_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_durably_waits"),
    )
    op.create_index(
        "ux_durably_waits_run_name", "durably_waits", ["run_id", "name"], unique=True
    )
    op.create_index(
        "ix_durably_runs_waiting",
        "durably_runs",
        ["status", "run_at"],
        sqlite_where=sa.text("status = 'waiting'"),
        postgresql_where=sa.text("status = 'waiting'"),
    )


def downgrade() -> None:
    op.drop_index("ix_durably_runs_waiting", table_name="durably_runs")
    op.drop_table("durably_waits")
