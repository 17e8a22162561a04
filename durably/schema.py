"""The durably tables: one ``MetaData``, SQLAlchemy Core only.

This module is the source of truth for the schema: the tables and their
indexes, and how a run's step counters are read (``RUN_COLUMNS``). The Alembic
revisions in ``migrations/versions`` must produce exactly this (tests compare
them with Alembic's autogenerate and with the DDL ``create_all`` writes).

Times are integer milliseconds since the epoch (see :mod:`durably.clock`).
JSON values are stored as text. Partial indexes carry both ``sqlite_where``
and ``postgresql_where`` so the definitions stay portable.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from .status import ACTIVE_STATUSES, RunStatus, StepStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""The type of a table's own row counter (steps, step attempts, logs, queue claims).

Its sequence never goes back, even as finished runs are purged, so it must
be 64-bit: PostgreSQL's ``INTEGER`` would run out after 2**31 rows. SQLite
keeps ``INTEGER``, because only an ``INTEGER PRIMARY KEY`` is its 64-bit rowid."""


def sql_status(status: RunStatus) -> ColumnElement[Any]:
    """A status as an SQL literal, not a bound parameter.

    The partial indexes on ``durably_runs`` have ``status = '...'`` in their
    WHERE clause. With ``status = ?`` SQLite's planner depends on the bound
    value and re-prepares the statement on every execution: a claim then
    costs several times as much.
    """
    return literal_column(f"'{status.value}'")


PENDING_ONLY = text("status = 'pending'")
WAITING_ONLY = text("status = 'waiting'")
PENDING_WITH_KEY = text("status = 'pending' AND concurrency_key IS NOT NULL")
COMPLETED_ONLY = text("status = 'completed'")
# Partial indexes hold only the rows their queries look for. Each index a
# row is in costs a B-tree write when the row is inserted and whenever an
# indexed column changes, and creating or claiming a run is little else.
LEASED_ONLY = text("status = 'leased'")
WITH_IDEMPOTENCY_KEY = text("idempotency_key IS NOT NULL")
WITH_CONCURRENCY_KEY = text("concurrency_key IS NOT NULL")
ENDED_ONLY = text("completed_at IS NOT NULL")

runs = Table(
    "durably_runs",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("job_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("output", Text),
    Column("error", Text),
    Column("labels", Text, nullable=False, server_default="{}"),
    Column("progress", Text),
    Column("idempotency_key", String(255)),
    Column("concurrency_key", String(255)),
    Column("current_step_index", Integer, nullable=False, server_default="0"),
    Column("completed_step_count", Integer, nullable=False, server_default="0"),
    # The lease: who runs it, until when, and the fencing token. Every claim
    # increments lease_generation; every write by a lease holder is guarded by
    # it, so a worker that lost its lease can never overwrite the new owner.
    Column("lease_owner", String(255)),
    Column("lease_expires_at", BigInteger),
    Column("lease_generation", Integer, nullable=False, server_default="0"),
    Column("started_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Claims of this run after a lease expired (its worker died or lost
    # touch): a run that keeps killing its worker stops after max_recoveries.
    # Last, where the revision that added it put it.
    Column("recovery_count", Integer, nullable=False, server_default="0"),
    # Queue semantics (revision durably_0007). ``run_at`` is when the run
    # becomes claimable: its trigger time, later for a delayed run or one
    # waiting out a retry's backoff. ``attempt`` counts the run's attempts
    # (a retry after a failure starts the next one).
    Column("queue", String(255), nullable=False, server_default="default"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("run_at", BigInteger, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="1"),
    # The trace the run was triggered in (revision durably_0011): the
    # OpenTelemetry propagator's carrier as a JSON object, so that the worker
    # that runs it, in any process, continues the trace. NULL unless the
    # instance is instrumented (durably.contrib.opentelemetry).
    Column("trace_context", Text),
    # One idempotency key per job, for the life of the run row.
    Index(
        "ux_durably_runs_job_idempotency",
        "job_name",
        "idempotency_key",
        unique=True,
        sqlite_where=WITH_IDEMPOTENCY_KEY,
        postgresql_where=WITH_IDEMPOTENCY_KEY,
    ),
    # At most one *pending* run per (job, concurrency key).
    Index(
        "ux_durably_runs_pending_concurrency",
        "job_name",
        "concurrency_key",
        unique=True,
        sqlite_where=PENDING_WITH_KEY,
        postgresql_where=PENDING_WITH_KEY,
    ),
    # Listing by status. Runs are listed by id everywhere: a ULID sorts by
    # creation time, so the primary key's own index serves the unfiltered
    # listing and no index on created_at is needed.
    Index("ix_durably_runs_status_id", "status", "id"),
    # Claim of expired leases and the reaper: status = 'leased' AND lease_expires_at <= now.
    Index(
        "ix_durably_runs_status_lease",
        "status",
        "lease_expires_at",
        sqlite_where=LEASED_ONLY,
        postgresql_where=LEASED_ONLY,
    ),
    # The active-lease guard: is another run with this key leased right now?
    Index(
        "ix_durably_runs_concurrency",
        "concurrency_key",
        "status",
        "lease_expires_at",
        sqlite_where=WITH_CONCURRENCY_KEY,
        postgresql_where=WITH_CONCURRENCY_KEY,
    ),
    # Listing newest first, per job.
    Index("ix_durably_runs_job_id", "job_name", "id"),
    # Retention purge: terminal runs by completion time.
    Index(
        "ix_durably_runs_status_completed",
        "status",
        "completed_at",
        sqlite_where=ENDED_ONLY,
        postgresql_where=ENDED_ONLY,
    ),
)

# Claim: the next pending run in claim order, higher priority first, then by
# when it became claimable, then by id. The planner walks this index in that
# order and stops at the first due run it may take. ``status`` leads although
# every entry is pending: with it the index serves ``status = 'pending'`` as
# well as ix_durably_runs_status_id does, and wins by serving the ORDER BY
# too (without it SQLite's planner takes (status, id) and sorts every
# pending run on each claim).
Index(
    "ix_durably_runs_claim",
    runs.c.status,
    runs.c.priority.desc(),
    runs.c.run_at,
    runs.c.id,
    sqlite_where=PENDING_ONLY,
    postgresql_where=PENDING_ONLY,
)

# Claim of waiting runs whose time has come (revision durably_0010): a waiting
# run's ``run_at`` is when it wakes (its sleep's end, its wait's deadline, or
# at once once its signal arrived). Only waiting runs are in it, so the
# claim's third arm seeks past the not-yet-due ones and never scans them.
Index(
    "ix_durably_runs_waiting",
    runs.c.status,
    runs.c.run_at,
    sqlite_where=WAITING_ONLY,
    postgresql_where=WAITING_ONLY,
)

run_labels = Table(
    "durably_run_labels",
    metadata,
    Column("run_id", String(26), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_durably_run_labels_key_value", "key", "value", "run_id"),
)

steps = Table(
    "durably_steps",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("run_id", String(26), nullable=False),
    Column("name", String(255), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", Text),
    Column("error", Text),
    # The fencing token of the lease that wrote this row (for audits).
    Column("lease_generation", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger),
    # A step completes once per run: the replay cache is keyed by name.
    Index(
        "ux_durably_steps_run_completed_name",
        "run_id",
        "name",
        unique=True,
        sqlite_where=COMPLETED_ONLY,
        postgresql_where=COMPLETED_ONLY,
    ),
    Index("ix_durably_steps_run_index", "run_id", "step_index"),
)

# -- a run's step counters -----------------------------------------------------
# ``current_step_index`` and ``completed_step_count`` describe a run's
# completed steps. While the run is active they are counted from its step
# rows whenever the run is read (``RUN_COLUMNS``), so storing a step result
# writes the step's row and nothing else. When the run ends they are stored
# on its row (``COUNTED_STEP_COUNTERS``, set by the update that ends it),
# because a completed run's step rows are deleted.
#
# Until revision 0005 a trigger advanced them on the run's row with every
# step: that rewrote the whole run row (its input included) once per step,
# a third of what storing a step cost SQLite.


def _of_completed_steps(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``value`` over the completed steps of the run in the enclosing statement."""
    return (
        select(value)
        .where(
            steps.c.run_id == runs.c.id,
            # A literal, as statuses are everywhere in durably's SQL (see
            # sql_status). The run's steps are found by ix_durably_steps_run_index.
            steps.c.status == literal_column(f"'{StepStatus.COMPLETED.value}'"),
        )
        .correlate(runs)
        .scalar_subquery()
    )


COUNTED_STEP_COUNTERS: dict[str, ColumnElement[Any]] = {
    "current_step_index": _of_completed_steps(
        func.coalesce(func.max(steps.c.step_index) + literal_column("1"), literal_column("0"))
    ),
    "completed_step_count": _of_completed_steps(func.count()),
}
"""A run's step counters, counted from its step rows.

``runs.update().values(**COUNTED_STEP_COUNTERS)`` stores them on the row."""

_IS_ACTIVE = runs.c.status.in_([sql_status(status) for status in sorted(ACTIVE_STATUSES)])

RUN_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(
    case((_IS_ACTIVE, COUNTED_STEP_COUNTERS[column.name]), else_=column).label(column.name)
    if column.name in COUNTED_STEP_COUNTERS
    else column
    for column in runs.c
)
"""What a run reads as: ``runs``' columns, with an active run's step counters counted.

Select these, not ``*runs.c``, wherever a run is read. An ``UPDATE`` or
``DELETE`` returns ``*runs.c`` instead: SQLAlchemy writes ``RETURNING``'s
columns unqualified, so in a subquery there ``id`` and ``status`` would be
the step's. The stored counters it returns are exact for a run the
statement ends or that had ended before, and for one an ended run becomes
again (a retry), as no step is written while a run is ended; a claim's row
is used for its input and labels only."""


logs = Table(
    "durably_logs",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("run_id", String(26), nullable=False),
    Column("step_name", String(255)),
    Column("level", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", Text),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_durably_logs_run_id", "run_id", "id"),
)

step_attempts = Table(
    "durably_step_attempts",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("run_id", String(26), nullable=False),
    Column("step_name", String(255), nullable=False),
    Column("step_index", Integer, nullable=False),
    # The run's attempt during which this step attempt ran.
    Column("run_attempt", Integer, nullable=False),
    Column("lease_generation", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("traceback", Text),
    Column("started_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger),
    # One attempt per step index and lease generation: the key its start and its
    # outcome are written by (core/attempts.py), in the order the run made them.
    Index(
        "ux_durably_step_attempts_run_step",
        "run_id",
        "lease_generation",
        "step_index",
        unique=True,
    ),
)
"""Every execution of a step, kept until its run is deleted or purged (the steps
table keeps only what a resume needs)."""

waits = Table(
    "durably_waits",
    metadata,
    # A ULID: the address a job hands to the outside world (``wait.id``).
    Column("id", String(26), primary_key=True),
    Column("run_id", String(26), nullable=False),
    Column("name", String(255), nullable=False),
    # ``signal`` (step.prepare_wait) or ``sleep`` (step.sleep: a wait no signal ends).
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Text),
    Column("payload", Text),
    Column("signal_id", String(255)),
    # Fixed by the first prepare; NULL: no deadline.
    Column("deadline_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    # The timings (see durably.waits.Wait): when the run first suspended on
    # the wait, when its result came, and when a worker first resumed the
    # run after that.
    Column("suspended_at", BigInteger),
    Column("resolved_at", BigInteger),
    Column("resumed_at", BigInteger),
    # One wait per name and run: a replayed prepare finds the first one.
    Index("ux_durably_waits_run_name", "run_id", "name", unique=True),
)
"""Durable waits (revision durably_0010): a run's prepared waits and sleeps, and their results."""

queue_claims = Table(
    "durably_queue_claims",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("claimed_at", BigInteger, nullable=False),
    Index("ix_durably_queue_claims_queue_claimed_at", "queue", "claimed_at"),
)
"""When runs of rate-limited queues were claimed: the sliding window a claim counts."""

workers = Table(
    "durably_workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("engine", String(16), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("last_heartbeat_at", BigInteger, nullable=False),
    Index("ix_durably_workers_last_heartbeat_at", "last_heartbeat_at"),
)

schedules = Table(
    "durably_schedules",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("job_name", String(255), nullable=False),
    # The timetable: a 5-field cron expression in ``timezone``, or an interval.
    Column("cron", String(255)),
    Column("every_ms", BigInteger),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("input", Text, nullable=False),
    Column("labels", Text, nullable=False, server_default="{}"),
    Column("catch_up", String(16), nullable=False, server_default="latest"),
    Column("paused", Integer, nullable=False, server_default="0"),
    # The latest tick handled (its run enqueued, or skipped): only later ticks
    # are due. It only moves forward (``UPDATE … WHERE last_tick_at < :tick``).
    Column("last_tick_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
"""Schedules (revision durably_0008): what the workers of every process tick
(:mod:`durably.timetable`, :mod:`durably.engines.scheduler`)."""

VERSION_TABLE = "durably_alembic_version"
"""Alembic's version table for durably's own history, separate from the host app's."""
