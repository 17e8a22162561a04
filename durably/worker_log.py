"""What a worker process tells its operator: events turned into ``logging`` records.

A worker runs unattended; when a run fails at three in the morning the log
is where someone looks first, so a failure must leave a line there with its
traceback, not only a row in the database. The records are made from the
events durably already emits (:mod:`durably.events`), so there is one place
that says what happened and this module only says how it reads:

* ``ERROR``: a run failed (its traceback when the job raised);
* ``WARNING``: a retry was scheduled, a lease was lost, a database or other
  error the worker survived (with the backoff it takes before claiming again);
* ``DEBUG``: each run started and completed, only when the logger is enabled
  for ``DEBUG`` when the listeners are attached: a per-run event costs
  nothing while nobody listens to it.

All records go to the ``durably`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import DurablyError, LeaseLostError
from .events import Event, EventType, Listener

LOGGER_NAME = "durably"

Subscribe = Callable[[EventType, Listener], Callable[[], None]]
"""``Durably.on``: subscribe a listener to one event type; returns an unsubscribe."""


def log_worker_events(on: Subscribe, logger: logging.Logger | None = None) -> Callable[[], None]:
    """Log the events of a worker on ``logger`` (default: ``durably``); returns an unsubscribe.

    ``on`` is :meth:`durably.Durably.on`.
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    listeners: dict[EventType, Listener] = {
        EventType.RUN_FAIL: lambda event: _run_failed(log, event),
        EventType.RUN_RETRY_SCHEDULED: lambda event: _retry_scheduled(log, event),
        EventType.WORKER_ERROR: lambda event: _worker_error(log, event),
    }
    if log.isEnabledFor(logging.DEBUG):
        listeners[EventType.RUN_LEASED] = lambda event: log.debug(
            "run %s (job %s) started", event.run_id, event.job_name
        )
        listeners[EventType.RUN_COMPLETE] = lambda event: log.debug(
            "run %s (job %s) completed in %.3fs", event.run_id, event.job_name, event.duration or 0
        )
    unsubscribes = [on(event_type, listener) for event_type, listener in listeners.items()]

    def unsubscribe() -> None:
        for remove in unsubscribes:
            remove()

    return unsubscribe


def _run_failed(log: logging.Logger, event: Event) -> None:
    where = f" in step {event.failed_step_name!r}" if event.failed_step_name else ""
    log.error(
        "run %s (job %s) failed%s: %s",
        event.run_id,
        event.job_name,
        where,
        event.error,
        exc_info=event.exception,
    )


def _retry_scheduled(log: logging.Logger, event: Event) -> None:
    when = event.run_at.isoformat(timespec="seconds") if event.run_at else "now"
    log.warning(
        "run %s (job %s) attempt %s failed: %s; attempt %s at %s",
        event.run_id,
        event.job_name,
        (event.attempt or 2) - 1,
        event.error,
        event.attempt,
        when,
    )


def _worker_error(log: logging.Logger, event: Event) -> None:
    """One line per ``worker:error``, always ``worker error (CONTEXT, run ID): …`` so that a
    log search (or a test) finds every one of them with one pattern."""
    exception = event.exception
    detail = event.error
    if isinstance(exception, LeaseLostError) or (
        exception is None and event.context == "lease-renewal" and event.run_id
    ):
        detail = f"lease lost, this worker stopped the run and another resumes it ({detail})"
    if event.retry_in is not None:
        detail = f"{detail}; claiming again in {event.retry_in:.1f}s"
    # durably's own errors say what happened; anything else is a bug worth its traceback
    unexpected = exception is not None and not isinstance(exception, DurablyError)
    log.warning(
        "worker error (%s, run %s): %s",
        event.context,
        event.run_id,
        detail,
        exc_info=exception if unexpected else None,
    )
