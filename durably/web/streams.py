"""The two event streams, ``/subscribe`` (one run) and ``/runs/subscribe`` (a list).

Events of this process arrive from the event system as they happen. Runs
changed by *another* process (a worker elsewhere) emit nothing here, so
each stream also reads the database every ``poll`` seconds and makes up
the event a local listener would have seen: a run that finished, was
claimed, or appeared. That is the latency of cross-process changes.

``run:progress`` is throttled per run, as in TS: the first goes out at
once, later ones at most every ``throttle`` seconds (the latest wins), and
an event that ends the run first flushes the progress held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..events import TERMINAL_EVENTS, Event, EventType
from ..models import Run
from ..status import RunStatus
from . import wire
from .effects import Call, Flow, Inbox, Send, Wait
from .http import dumps

KEEPALIVE = 15.0
"""Seconds of silence before a comment line: keeps proxies from closing the
stream, and lets a WSGI server notice a client that left."""

RUN_EVENTS = frozenset(
    {
        EventType.RUN_LEASED,
        EventType.RUN_COMPLETE,
        EventType.RUN_FAIL,
        EventType.RUN_CANCEL,
        EventType.RUN_DELETE,
        EventType.RUN_PROGRESS,
        EventType.RUN_RETRY_SCHEDULED,
        EventType.STEP_START,
        EventType.STEP_COMPLETE,
        EventType.STEP_FAIL,
        EventType.LOG_WRITE,
    }
)
"""What ``/subscribe`` forwards (TS's list, plus ``run:retry-scheduled``)."""

LIST_EVENTS = frozenset(
    {
        EventType.RUN_TRIGGER,
        EventType.RUN_COALESCED,
        EventType.RUN_LEASED,
        EventType.RUN_COMPLETE,
        EventType.RUN_FAIL,
        EventType.RUN_CANCEL,
        EventType.RUN_DELETE,
        EventType.RUN_PROGRESS,
        EventType.RUN_RETRY_SCHEDULED,
        EventType.STEP_START,
        EventType.STEP_COMPLETE,
        EventType.STEP_FAIL,
        EventType.STEP_CANCEL,
        EventType.LOG_WRITE,
    }
)
"""What ``/runs/subscribe`` forwards: every run and step event but lease renewals."""

STATUS_EVENTS: Mapping[RunStatus, EventType] = {
    RunStatus.PENDING: EventType.RUN_TRIGGER,
    RunStatus.LEASED: EventType.RUN_LEASED,
    RunStatus.COMPLETED: EventType.RUN_COMPLETE,
    RunStatus.FAILED: EventType.RUN_FAIL,
    RunStatus.CANCELLED: EventType.RUN_CANCEL,
}
"""The event that announces a run found in a status by polling."""

EVENT_STATUS: Mapping[EventType, RunStatus] = {
    EventType.RUN_TRIGGER: RunStatus.PENDING,
    EventType.RUN_RETRY_SCHEDULED: RunStatus.PENDING,
    EventType.RUN_LEASED: RunStatus.LEASED,
    EventType.RUN_COMPLETE: RunStatus.COMPLETED,
    EventType.RUN_FAIL: RunStatus.FAILED,
    EventType.RUN_CANCEL: RunStatus.CANCELLED,
}
"""The status an event leaves its run in, so polling does not announce it again."""

LIST_POLL_LIMIT = 100
OPENING = b": stream open\n\n"
"""A comment (clients skip it) written first: a WSGI server sends the headers
with the first chunk, and a client waits for them before it listens."""


def frame(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class Throttle:
    """Per-run throttling of ``run:progress`` payloads (``seconds <= 0``: none)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._sent_at: dict[str, float] = {}
        self._held: dict[str, dict[str, Any]] = {}

    def offer(
        self, event_type: EventType, run_id: str, payload: dict[str, Any], now: float
    ) -> list[dict[str, Any]]:
        """What to send now for this payload (held back progress first, before a run's end)."""
        if self.seconds <= 0:
            return [payload]
        if event_type is EventType.RUN_PROGRESS:
            if now - self._sent_at.get(run_id, -self.seconds) >= self.seconds:
                self._sent_at[run_id] = now
                self._held.pop(run_id, None)
                return [payload]
            self._held[run_id] = payload
            return []
        if event_type in TERMINAL_EVENTS:
            self._sent_at.pop(run_id, None)
            held = self._held.pop(run_id, None)
            return [payload] if held is None else [held, payload]
        return [payload]

    def due(self, now: float) -> list[dict[str, Any]]:
        """Held progress whose window has passed."""
        out = []
        for run_id in [r for r in self._held if now - self._sent_at[r] >= self.seconds]:
            out.append(self._held.pop(run_id))
            self._sent_at[run_id] = now
        return out

    def wait(self, now: float) -> float | None:
        """Seconds until held progress is due, None when nothing is held."""
        if not self._held:
            return None
        return max(0.0, min(self._sent_at[r] + self.seconds for r in self._held) - now)


@dataclass
class Pacing:
    throttle: float
    poll: float


def _synthetic(event_type: EventType, run: Run, **fields: Any) -> Event:
    """An event read from the database rather than emitted (``sequence`` 0, as in TS)."""
    return Event(
        type=event_type,
        run_id=run.id,
        job_name=run.job_name,
        labels=run.labels,
        timestamp=datetime.now(timezone.utc),
        **fields,
    )


def run_state_events(run: Run) -> list[Event]:
    """What ``/subscribe`` sends first, for a run as read: TS's initial state."""
    if run.status is RunStatus.LEASED:
        events = [_synthetic(EventType.RUN_LEASED, run, input=run.input)]
        if run.progress is not None:
            events.append(_synthetic(EventType.RUN_PROGRESS, run, progress=run.progress))
        return events
    if run.status is RunStatus.COMPLETED:
        return [_synthetic(EventType.RUN_COMPLETE, run, output=run.output, duration=0.0)]
    if run.status is RunStatus.FAILED:
        return [_synthetic(EventType.RUN_FAIL, run, error=run.error, failed_step_name="")]
    if run.status is RunStatus.CANCELLED:
        return [_synthetic(EventType.RUN_CANCEL, run)]
    return []


def run_stream(durably: Any, inbox: Inbox, run: Run, pacing: Pacing) -> Flow[None]:
    """``/subscribe``: the run's state, then its events until it ends (or the client leaves)."""
    try:
        chunks = [OPENING, *(frame(wire.event(event)) for event in run_state_events(run))]
        for chunk in chunks:
            if not (yield Send(chunk)):
                return
        if run.is_terminal:
            return
        yield from _pump(
            durably, inbox, pacing, wire.event, _RunPoll(run), lambda e: e.type in TERMINAL_EVENTS
        )
    finally:
        inbox.close()


def list_stream(
    durably: Any, inbox: Inbox, filters: Mapping[str, Any], pacing: Pacing
) -> Flow[None]:
    """``/runs/subscribe``: every matching run and step event, until the client leaves."""
    try:
        poll = _ListPoll(filters)
        poll.seed((yield poll.call(durably)))
        # Only now the headers go out: a client that has them knows the snapshot is taken.
        if not (yield Send(OPENING)):
            return
        yield from _pump(durably, inbox, pacing, wire.list_event, poll, lambda e: False)
    finally:
        inbox.close()


class _RunPoll:
    """Events for one run that another process changed, read by polling."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.status: RunStatus | None = run.status

    def call(self, durably: Any) -> Call:
        return Call(durably, "get_run", (self.run.id,))

    def seen(self, event: Event) -> None:
        self.status = EVENT_STATUS.get(event.type, self.status)

    def changes(self, run: Run | None) -> list[Event]:
        if run is None:
            return [_synthetic(EventType.RUN_DELETE, self.run)]
        if run.status is self.status:
            return []
        self.status = run.status
        if run.status is RunStatus.PENDING:
            return []
        return run_state_events(run)


class _ListPoll:
    """Events for listed runs that another process changed or created, read by polling."""

    def __init__(self, filters: Mapping[str, Any]) -> None:
        self.filters = filters
        self.statuses: dict[str, RunStatus] = {}

    def call(self, durably: Any) -> Call:
        return Call(durably, "get_runs", kwargs={**self.filters, "limit": LIST_POLL_LIMIT})

    def seed(self, runs: list[Run]) -> None:
        self.statuses = {run.id: run.status for run in runs}

    def seen(self, event: Event) -> None:
        if event.run_id is None:
            return
        if event.type is EventType.RUN_DELETE:
            self.statuses.pop(event.run_id, None)
        elif event.type in EVENT_STATUS:
            self.statuses[event.run_id] = EVENT_STATUS[event.type]

    def changes(self, runs: list[Run]) -> list[Event]:
        events = []
        for run in reversed(runs):  # oldest first
            if self.statuses.get(run.id) is not run.status and run.status in STATUS_EVENTS:
                events.append(_synthetic(STATUS_EVENTS[run.status], run))
            self.statuses[run.id] = run.status
        return events


def _pump(
    durably: Any,
    inbox: Inbox,
    pacing: Pacing,
    encode: Callable[[Event], dict[str, Any]],
    poll: _RunPoll | _ListPoll,
    ends: Callable[[Event], bool],
) -> Flow[None]:
    """Wait for events, poll, throttle, write; until an event ``ends`` the stream or the client leaves."""
    throttle = Throttle(pacing.throttle)
    next_poll = time.monotonic() + pacing.poll
    last_write = time.monotonic()
    while True:
        now = time.monotonic()
        held = throttle.wait(now)
        timeout = min(
            next_poll - now, last_write + KEEPALIVE - now, *([held] if held is not None else [])
        )
        events = yield Wait(inbox, max(0.0, timeout))
        if events is None:
            return
        for event in events:
            poll.seen(event)
        now = time.monotonic()
        if now >= next_poll:
            polled = poll.changes((yield poll.call(durably)))
            events = [*events, *polled]
            next_poll = time.monotonic() + pacing.poll
        payloads: list[dict[str, Any]] = []
        done = False
        for event in events:
            payloads += throttle.offer(event.type, event.run_id or "", encode(event), now)
            if ends(event):
                done = True
                break
        payloads += throttle.due(now)
        chunks = [frame(payload) for payload in payloads]
        if not chunks and now - last_write >= KEEPALIVE:
            chunks = [b": keepalive\n\n"]
        for chunk in chunks:
            if not (yield Send(chunk)):
                return
            last_write = time.monotonic()
        if done:
            return
