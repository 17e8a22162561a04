"""Events: what happened to runs and steps, delivered to in-process listeners.

Listeners run synchronously in the thread that emitted the event (often a
worker thread), in registration order. A listener that raises is reported
to the ``on_error`` handler (or logged) and never breaks the worker; keep
listeners quick, they sit on the worker's path.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

logger = logging.getLogger("durably")


class EventType(str, Enum):
    """Every event name durably emits."""

    RUN_TRIGGER = "run:trigger"
    RUN_COALESCED = "run:coalesced"
    RUN_LEASED = "run:leased"
    RUN_LEASE_RENEWED = "run:lease-renewed"
    RUN_COMPLETE = "run:complete"
    RUN_FAIL = "run:fail"
    RUN_RETRY_SCHEDULED = "run:retry-scheduled"
    RUN_WAITING = "run:waiting"
    RUN_CANCEL = "run:cancel"
    RUN_DELETE = "run:delete"
    RUN_PROGRESS = "run:progress"
    STEP_START = "step:start"
    STEP_COMPLETE = "step:complete"
    STEP_FAIL = "step:fail"
    STEP_CANCEL = "step:cancel"
    LOG_WRITE = "log:write"
    WAIT_PREPARED = "wait:prepared"
    WAIT_SIGNALLED = "wait:signalled"
    WAIT_TIMED_OUT = "wait:timed-out"
    WORKER_ERROR = "worker:error"

    def __str__(self) -> str:
        return self.value


DOMAIN_EVENTS = frozenset(
    {
        EventType.RUN_TRIGGER,
        EventType.RUN_COALESCED,
        EventType.RUN_COMPLETE,
        EventType.RUN_FAIL,
        EventType.RUN_RETRY_SCHEDULED,
        EventType.RUN_WAITING,
        EventType.RUN_CANCEL,
        EventType.RUN_DELETE,
    }
)
"""Events about what a run *is* (the rest are about what a worker is doing)."""

TERMINAL_EVENTS = frozenset(
    {EventType.RUN_COMPLETE, EventType.RUN_FAIL, EventType.RUN_CANCEL, EventType.RUN_DELETE}
)


@dataclass(frozen=True, slots=True)
class Event:
    """One event. Fields that do not apply to an event type are None.

    ``sequence`` increases by one per event emitted by a ``Durably``
    instance; ``timestamp`` is when it was emitted (UTC).
    """

    type: EventType
    run_id: str | None = None
    job_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    input: Any = None
    output: Any = None
    error: str | None = None
    progress: Any = None
    step_name: str | None = None
    step_index: int | None = None
    duration: float | None = None
    """Seconds, on ``run:complete`` and ``step:complete``."""
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    failed_step_name: str | None = None
    skipped_input: Any = None
    skipped_labels: Mapping[str, str] | None = None
    level: str | None = None
    message: str | None = None
    data: Any = None
    context: str | None = None
    """On ``worker:error``: what the worker was doing (e.g. ``"lease-renewal"``)."""
    attempt: int | None = None
    """On ``run:retry-scheduled``: the number of the attempt to come (2 after the first failed)."""
    run_at: datetime | None = None
    """On ``run:retry-scheduled``: when that attempt may start. On ``run:waiting``: when the
    run wakes if no signal comes first (None: no deadline)."""
    wait_id: str | None = None
    """On ``run:waiting`` and the ``wait:*`` events: the wait (``data`` holds a signal's payload)."""
    wait_name: str | None = None
    exception: BaseException | None = None
    """On ``run:fail`` and ``run:retry-scheduled`` (when the job raised) and ``worker:error``:
    the exception itself, with its traceback, for logging."""
    retry_in: float | None = None
    """On ``worker:error`` from the claim loop: seconds the worker waits before it claims again."""
    queue: str | None = None
    """On the events a worker emits while it runs a run: the run's queue."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    sequence: int = 0

    @property
    def is_domain(self) -> bool:
        return self.type in DOMAIN_EVENTS


Listener = Callable[[Event], Any]
ErrorHandler = Callable[[BaseException, Event], Any]


class EventBus:
    """Listeners by event type; thread-safe registration, lock-free emission."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[EventType, tuple[Listener, ...]] = {}
        self._any: tuple[Listener, ...] = ()
        self._sequence = itertools.count(1)
        self.on_error: ErrorHandler | None = None

    def on(self, event_type: EventType | str | None, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for each event of ``event_type`` (None: every event)."""
        key = None if event_type is None else _event_type(event_type)
        with self._lock:
            if key is None:
                self._any = (*self._any, listener)
            else:
                self._listeners[key] = (*self._listeners.get(key, ()), listener)

        def unsubscribe() -> None:
            with self._lock:
                if key is None:
                    self._any = tuple(x for x in self._any if x is not listener)
                else:
                    self._listeners[key] = tuple(
                        x for x in self._listeners.get(key, ()) if x is not listener
                    )

        return unsubscribe

    def listens_to(self, *event_types: EventType) -> bool:
        """Whether an event of any of ``event_types`` would reach a listener now."""
        return bool(self._any) or any(map(self._listeners.get, event_types))

    def pass_over(self, count: int) -> None:
        """What ``count`` calls of :meth:`emit` do when nobody listens: number the events.

        For a caller that would emit many events and has checked
        :meth:`listens_to`: it then need not gather their fields.
        """
        for _ in itertools.islice(self._sequence, count):
            pass

    def emit(self, event_type: EventType, **fields: Any) -> None:
        sequence = next(self._sequence)
        listeners = self._listeners.get(event_type, ()) + self._any
        if not listeners:
            return  # nobody listens: an event costs no more than its sequence number
        event = Event(type=event_type, sequence=sequence, **fields)
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:
                self._report(exc, event)

    def _report(self, exc: BaseException, event: Event) -> None:
        handler = self.on_error
        if handler is None:
            logger.exception("durably event listener for %s raised", event.type, exc_info=exc)
            return
        try:
            handler(exc, event)
        except Exception:
            logger.exception("durably on_error handler raised")


def _event_type(value: EventType | str) -> EventType:
    try:
        return EventType(value)
    except ValueError:
        from .errors import ValidationError

        names = ", ".join(t.value for t in EventType)
        raise ValidationError(f"Unknown event type {value!r}; expected one of: {names}") from None
