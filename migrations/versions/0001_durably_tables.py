"""durably tables

Revision ID: durably_0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "durably_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("durably",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('durably_logs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('step_name', sa.String(length=255), nullable=True),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durably_logs'))
    )
    with op.batch_alter_table('durably_logs', schema=None) as batch_op:
        batch_op.create_index('ix_durably_logs_run_id', ['run_id', 'id'], unique=False)

    op.create_table('durably_run_labels',
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'key', name=op.f('pk_durably_run_labels'))
    )
    with op.batch_alter_table('durably_run_labels', schema=None) as batch_op:
        batch_op.create_index('ix_durably_run_labels_key_value', ['key', 'value', 'run_id'], unique=False)

    op.create_table('durably_runs',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('job_name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('labels', sa.Text(), server_default='{}', nullable=False),
    sa.Column('progress', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('concurrency_key', sa.String(length=255), nullable=True),
    sa.Column('current_step_index', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completed_step_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.BigInteger(), nullable=True),
    sa.Column('lease_generation', sa.Integer(), server_default='0', nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=True),
    sa.Column('completed_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durably_runs'))
    )
    with op.batch_alter_table('durably_runs', schema=None) as batch_op:
        batch_op.create_index('ix_durably_runs_concurrency', ['concurrency_key', 'status', 'lease_expires_at'], unique=False)
        batch_op.create_index('ix_durably_runs_created', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_durably_runs_job_created', ['job_name', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_durably_runs_status_completed', ['status', 'completed_at'], unique=False)
        batch_op.create_index('ix_durably_runs_status_created', ['status', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_durably_runs_status_lease', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_index('ux_durably_runs_job_idempotency', ['job_name', 'idempotency_key'], unique=True)
        batch_op.create_index('ux_durably_runs_pending_concurrency', ['job_name', 'concurrency_key'], unique=True, sqlite_where=sa.text("status = 'pending' AND concurrency_key IS NOT NULL"), postgresql_where=sa.text("status = 'pending' AND concurrency_key IS NOT NULL"))

    op.create_table('durably_steps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('lease_generation', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.Column('completed_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durably_steps'))
    )
    with op.batch_alter_table('durably_steps', schema=None) as batch_op:
        batch_op.create_index('ix_durably_steps_run_index', ['run_id', 'step_index'], unique=False)
        batch_op.create_index('ux_durably_steps_run_completed_name', ['run_id', 'name'], unique=True, sqlite_where=sa.text("status = 'completed'"), postgresql_where=sa.text("status = 'completed'"))

    op.create_table('durably_workers',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('engine', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.Column('last_heartbeat_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durably_workers'))
    )
    with op.batch_alter_table('durably_workers', schema=None) as batch_op:
        batch_op.create_index('ix_durably_workers_last_heartbeat_at', ['last_heartbeat_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('durably_workers', schema=None) as batch_op:
        batch_op.drop_index('ix_durably_workers_last_heartbeat_at')

    op.drop_table('durably_workers')
    with op.batch_alter_table('durably_steps', schema=None) as batch_op:
        batch_op.drop_index('ux_durably_steps_run_completed_name', sqlite_where=sa.text("status = 'completed'"), postgresql_where=sa.text("status = 'completed'"))
        batch_op.drop_index('ix_durably_steps_run_index')

    op.drop_table('durably_steps')
    with op.batch_alter_table('durably_runs', schema=None) as batch_op:
        batch_op.drop_index('ux_durably_runs_pending_concurrency', sqlite_where=sa.text("status = 'pending' AND concurrency_key IS NOT NULL"), postgresql_where=sa.text("status = 'pending' AND concurrency_key IS NOT NULL"))
        batch_op.drop_index('ux_durably_runs_job_idempotency')
        batch_op.drop_index('ix_durably_runs_status_lease')
        batch_op.drop_index('ix_durably_runs_status_created')
        batch_op.drop_index('ix_durably_runs_status_completed')
        batch_op.drop_index('ix_durably_runs_job_created')
        batch_op.drop_index('ix_durably_runs_created')
        batch_op.drop_index('ix_durably_runs_concurrency')

    op.drop_table('durably_runs')
    with op.batch_alter_table('durably_run_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_durably_run_labels_key_value')

    op.drop_table('durably_run_labels')
    with op.batch_alter_table('durably_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_durably_logs_run_id')

    op.drop_table('durably_logs')
