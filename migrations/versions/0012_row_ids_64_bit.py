"""Row counters of 64 bits on PostgreSQL: steps, step attempts, logs and queue claims

These four tables number their rows from a sequence that never goes back,
even as finished runs are purged. Created as ``SERIAL`` (32 bits) on
PostgreSQL, a busy deployment would exhaust it in months; this revision
makes the columns and their sequences ``BIGINT``. SQLite is left as it is:
its ``INTEGER PRIMARY KEY`` is already the 64-bit rowid.

Revision ID: durably_0012
Revises: durably_0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0012"
down_revision: str | None = "durably_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("durably_steps", "durably_step_attempts", "durably_logs", "durably_queue_claims")


def _retype(new: type[sa.Integer], old: type[sa.Integer], sql_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "id", type_=new(), existing_type=old(), existing_nullable=False)
        # A SERIAL's sequence has a type of its own, and with it a maximum.
        op.execute(f"ALTER SEQUENCE {table}_id_seq AS {sql_type}")


def upgrade() -> None:
    _retype(sa.BigInteger, sa.Integer, "bigint")


def downgrade() -> None:
    _retype(sa.Integer, sa.BigInteger, "integer")
