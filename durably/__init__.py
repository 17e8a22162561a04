"""durably: durable background jobs made of steps that survive crashes.

Runs, steps and logs live in SQLAlchemy Core tables on SQLite, libSQL or PostgreSQL; a
run interrupted by a deploy, a crash or ``kill -9`` is reclaimed by another
worker once its lease expires and resumes at its first unfinished step.
"""

from .app import Durably
from .context import AsyncStepContext, StepContext, StepLogger
from .errors import (
    BlockingCallError,
    CancelledError,
    ConflictError,
    DatabaseError,
    DatabaseLockedError,
    DurablyError,
    LeaseLostError,
    NotFoundError,
    NotMainThreadError,
    ReplicaSyncError,
    RunFailedError,
    RunTimeoutError,
    SchemaError,
    ValidationError,
    WaitExpiredError,
)
from .events import Event, EventType
from .flow import QueueLimits
from .jobs import Job, TriggerItem
from .migrate import alembic_version_location
from .models import LogEntry, Progress, QueueStats, Run, Schedule, Step, StepAttempt, WorkerInfo
from .retry import Retry
from .serialization import JSONSerializer, Serializer
from .status import Disposition, LogLevel, RunStatus, StepAttemptStatus, StepStatus, WaitStatus
from .storage.replica import Replica
from .storage.replica_metrics import ReplicaMetrics
from .waits import Wait, WaitResult

__all__ = [
    "AsyncStepContext",
    "BlockingCallError",
    "CancelledError",
    "ConflictError",
    "DatabaseError",
    "DatabaseLockedError",
    "Disposition",
    "Durably",
    "DurablyError",
    "Event",
    "EventType",
    "JSONSerializer",
    "Job",
    "LeaseLostError",
    "LogEntry",
    "LogLevel",
    "NotFoundError",
    "NotMainThreadError",
    "Progress",
    "QueueLimits",
    "QueueStats",
    "Replica",
    "ReplicaMetrics",
    "ReplicaSyncError",
    "Retry",
    "Run",
    "RunFailedError",
    "RunStatus",
    "RunTimeoutError",
    "Schedule",
    "SchemaError",
    "Serializer",
    "Step",
    "StepAttempt",
    "StepAttemptStatus",
    "StepContext",
    "StepLogger",
    "StepStatus",
    "TriggerItem",
    "ValidationError",
    "Wait",
    "WaitExpiredError",
    "WaitResult",
    "WaitStatus",
    "WorkerInfo",
    "alembic_version_location",
]

__version__ = "0.1.0"
