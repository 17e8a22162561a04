"""durably_runs.recovery_count: how many times a run was taken over after its worker stopped

A run whose step kills its worker (``os._exit``, out of memory, a crash in
native code) was claimed again after every lease expiry, forever. The count
lets a claim fail such a run once it exceeds ``max_recoveries``. Existing
runs start at 0.

Revision ID: durably_0006
Revises: durably_0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0006"
down_revision: str | None = "durably_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: SQLite adds a NOT NULL column with a default in
    # place, without copying the table.
    op.add_column(
        "durably_runs",
        sa.Column("recovery_count", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("durably_runs") as batch:
        batch.drop_column("recovery_count")
