"""What tests record of a ``Durably`` while it works."""

from __future__ import annotations

from durably import Durably, Event


def record_events(durably: Durably, event_type: str | None = None) -> list[Event]:
    """The events of ``event_type`` (None: all) emitted from now on, in order.

    ``list.append`` is atomic, so the workers' threads may emit concurrently.
    """
    events: list[Event] = []
    durably.on(event_type, events.append)
    return events
