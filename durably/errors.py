"""Every error durably raises on purpose.

All of them derive from :class:`DurablyError`, so ``except DurablyError`` is
enough for an application that wants to handle "durably said no" in one
place. ``status_code`` is what the HTTP handler answers with.
"""

from __future__ import annotations


class DurablyError(Exception):
    """Base class of every error raised by durably on purpose."""

    status_code: int = 500


class ValidationError(DurablyError, ValueError):
    """The caller passed something durably cannot accept; nothing was stored."""

    status_code = 400


class NotFoundError(DurablyError, LookupError):
    """An unknown run id or job name."""

    status_code = 404


class ConflictError(DurablyError):
    """The request conflicts with the run's current state (e.g. cancel a completed run)."""

    status_code = 409


class WaitExpiredError(ConflictError):
    """A signal came at or after its wait's deadline: the wait has timed out, the signal is not kept."""

    status_code = 410


class CancelledError(DurablyError):
    """The run was cancelled.

    Raised inside a job at the next step boundary after a cancel, and by the
    wait APIs when the awaited run ends cancelled.
    """

    status_code = 409

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Run was cancelled: {run_id}")
        self.run_id = run_id


class LeaseLostError(DurablyError):
    """This worker no longer holds the run's lease; another worker may own it now.

    Raised inside a job so that it stops before starting another step. The run
    is not failed: whoever holds the lease now finishes it.
    """

    status_code = 409

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Lease ownership was lost: {run_id}")
        self.run_id = run_id


class RunFailedError(DurablyError):
    """The awaited run failed; ``error`` is the message stored on the run."""

    status_code = 500

    def __init__(self, run_id: str, error: str | None) -> None:
        super().__init__(error or "Run failed")
        self.run_id = run_id
        self.error = error


class DatabaseError(DurablyError):
    """The database could not do what was asked (unreachable, read-only, corrupt...)."""

    status_code = 503


class DatabaseLockedError(DatabaseError):
    """Another connection kept the database locked for longer than ``lock_timeout``."""


class ReplicaSyncError(DatabaseError):
    """The embedded replica could not catch up with its primary, so it was not read.

    durably reads the replica only after a sync it needs has succeeded (see
    :class:`durably.Replica`); the primary and every run on it are unaffected.
    """


class SchemaError(DatabaseError):
    """The database schema is missing, too old or newer than this version of durably."""


class NotMainThreadError(DurablyError, RuntimeError):
    """Signal handlers can only be installed (or removed) from the main thread.

    Python runs signal handlers in the main thread only, and refuses to
    install them from any other.
    """


class BlockingCallError(DurablyError, RuntimeError):
    """A blocking method was called on an event loop that runs durably's jobs.

    That loop is the one the asyncio engine was started on, or durably's own
    loop where the thread engine runs ``async def`` jobs. Blocking it stalls
    every job on it, and a call that waits for a run (``trigger_and_wait``,
    ``wait_for_run``, ``stop``) waits for work only that loop can do: it
    would never return. The message names the ``_async`` twin to await.
    """


class RunTimeoutError(DurablyError, TimeoutError):
    """An attempt of the run ran longer than its job's ``timeout``.

    The attempt fails with it and is retried under the job's retry policy.
    """

    status_code = 500

    def __init__(self, timeout: float) -> None:
        super().__init__(f"Run exceeded its timeout of {timeout:g}s")
        self.timeout = timeout
