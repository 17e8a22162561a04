"""partial indexes on durably_runs

Four indexes of ``durably_runs`` held an entry for every run although their
queries only ever look for some: the idempotency and concurrency-key
indexes (most runs have no key), the expired-lease index (only leased runs
expire) and the retention index (only ended runs are purged). Each entry is
a B-tree write on every insert and status change; as partial indexes they
make a trigger write five B-trees instead of nine.

Revision ID: durably_0002
Revises: durably_0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0002"
down_revision: str | None = "durably_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> (columns, unique, the rows it keeps)
_INDEXES: dict[str, tuple[list[str], bool, str]] = {
    "ux_durably_runs_job_idempotency": (
        ["job_name", "idempotency_key"],
        True,
        "idempotency_key IS NOT NULL",
    ),
    "ix_durably_runs_status_lease": (["status", "lease_expires_at"], False, "status = 'leased'"),
    "ix_durably_runs_concurrency": (
        ["concurrency_key", "status", "lease_expires_at"],
        False,
        "concurrency_key IS NOT NULL",
    ),
    "ix_durably_runs_status_completed": (
        ["status", "completed_at"],
        False,
        "completed_at IS NOT NULL",
    ),
}


def upgrade() -> None:
    for name, (columns, unique, where) in _INDEXES.items():
        op.drop_index(name, table_name="durably_runs")
        op.create_index(
            name,
            "durably_runs",
            columns,
            unique=unique,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for name, (columns, unique, _where) in _INDEXES.items():
        op.drop_index(name, table_name="durably_runs")
        op.create_index(name, "durably_runs", columns, unique=unique)
