"""Schedules: cron and interval schedules, ticked by the workers of every process

``durably_schedules`` holds each schedule an app declares (``durably.schedule``):
its job, its timetable (a cron expression in a time zone, or an interval in
milliseconds), its input and labels, its catch-up policy, whether it is
paused, and the latest tick handled (``last_tick_at``), which only moves
forward. Each tick's run carries an idempotency key made of the schedule's
name and the tick's time, so the existing unique index on
``(job_name, idempotency_key)`` makes it one run however many processes
enqueue it.

Revision ID: durably_0008
Revises: durably_0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0008"
down_revision: str | None = "durably_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "durably_schedules",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("cron", sa.String(255)),
        sa.Column("every_ms", sa.BigInteger()),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("catch_up", sa.String(16), nullable=False, server_default="latest"),
        sa.Column("paused", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_tick_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_durably_schedules"),
    )


def downgrade() -> None:
    op.drop_table("durably_schedules")
