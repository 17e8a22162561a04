"""durably_runs.trace_context: the trace a run was triggered in, so its worker continues it

A trigger made while an OpenTelemetry span is current (with
``durably.contrib.opentelemetry`` instrumenting the instance) stores the
propagator's carrier here: a JSON object of text fields, W3C ``traceparent``
and ``tracestate`` by default. The worker that claims the run, in any
process, extracts it and starts the run's span as a child of the trigger's
context. The column holds what the configured propagator writes and nothing
else (a run's own metadata has its labels); it stays NULL for triggers
without instrumentation, so they neither write nor pay for it.

Revision ID: durably_0011
Revises: durably_0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "durably_0011"
down_revision: str | None = "durably_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: SQLite adds it in place.
    op.add_column("durably_runs", sa.Column("trace_context", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("durably_runs") as batch:
        batch.drop_column("trace_context")
