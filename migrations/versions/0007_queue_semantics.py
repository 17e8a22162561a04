"""Queue semantics: queues, priorities, delayed runs, attempts; step attempts; rate windows

``durably_runs`` gains ``queue``, ``priority``, ``run_at`` (when the run
becomes claimable) and ``attempt``, and the claim index that orders pending
runs by priority, then ``run_at``, then id. Existing runs keep their place:
their ``run_at`` is their creation time, so they are claimable at once and
in the order they were before. ``durably_step_attempts`` records every
execution of a step; ``durably_queue_claims`` the claims of rate-limited
queues.

Revision ID: durably_0007
Revises: durably_0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0007"
down_revision: str | None = "durably_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs: SQLite adds a NOT NULL column with a default in
    # place, without copying the table.
    op.add_column(
        "durably_runs",
        sa.Column("queue", sa.String(255), nullable=False, server_default="default"),
    )
    op.add_column(
        "durably_runs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "durably_runs", sa.Column("run_at", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "durably_runs", sa.Column("attempt", sa.Integer(), nullable=False, server_default="1")
    )
    op.execute("UPDATE durably_runs SET run_at = created_at")
    op.create_index(
        "ix_durably_runs_claim",
        "durably_runs",
        ["status", sa.text("priority DESC"), "run_at", "id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "durably_step_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("step_name", sa.String(255), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("run_attempt", sa.Integer(), nullable=False),
        sa.Column("lease_generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("traceback", sa.Text()),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_durably_step_attempts"),
    )
    op.create_index(
        "ix_durably_step_attempts_run_id", "durably_step_attempts", ["run_id", "id"]
    )
    op.create_table(
        "durably_queue_claims",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_durably_queue_claims"),
    )
    op.create_index(
        "ix_durably_queue_claims_queue_claimed_at", "durably_queue_claims", ["queue", "claimed_at"]
    )


def downgrade() -> None:
    op.drop_table("durably_queue_claims")
    op.drop_table("durably_step_attempts")
    op.drop_index("ix_durably_runs_claim", table_name="durably_runs")
    with op.batch_alter_table("durably_runs") as batch:
        for column in ("attempt", "run_at", "priority", "queue"):
            batch.drop_column(column)
