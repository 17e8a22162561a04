"""How commands print: aligned tables for people, JSON for scripts.

JSON carries every field of the models, as the Python API returns them:
datetimes as ISO-8601 UTC strings, durations as seconds, enums as their
values. Tables carry what fits on a line; ``runs show`` and ``--json`` have
the rest.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from ..models import Run
from ..status import RunStatus
from ..values import to_json

NONE = "-"
"""What an empty cell shows."""


def to_data(value: Any) -> Any:
    """``value`` as plain JSON data (dataclasses and mappings as objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {
            field.name: to_data(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
        for name in ("is_terminal", "is_active", "schedule", "scheduled_for"):
            if hasattr(type(value), name):  # the properties the API documents, for scripts
                data[name] = to_data(getattr(value, name))
        return data
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(key): to_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_data(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # A stored value of another type (a date, a set) as it is stored; one of a
    # serializer's own types, which this process may not know, as its repr.
    return to_json(value, repr)


def print_json(value: Any) -> None:
    json.dump(to_data(value), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    """Columns padded to their widest cell; ``empty`` instead when there are no rows (on
    stdout, in its place among the other sections of ``runs show``)."""
    lines = [list(headers), *([cell or NONE for cell in row] for row in rows)]
    if len(lines) == 1:
        print(empty)
        return
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        print("  ".join(cells).rstrip())


def print_fields(pairs: Iterable[tuple[str, str]]) -> None:
    """``name  value`` lines, the names padded to one width."""
    shown = [(name, value or NONE) for name, value in pairs]
    width = max(len(name) for name, _ in shown)
    for name, value in shown:
        print(f"{name.ljust(width)}  {value}")


def when(value: datetime | None) -> str:
    """A moment as people read it in a table: UTC, to the second."""
    if value is None:
        return NONE
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def status_text(run: Run, now: datetime) -> str:
    """A run's status, and whether a leased run's lease expired: such a run is not running,
    it waits for a worker to reclaim it."""
    if run.status is RunStatus.LEASED and run.lease_expires_at and run.lease_expires_at <= now:
        return "leased (lease expired)"
    return run.status.value


def seconds(value: timedelta | None) -> str:
    if value is None:
        return NONE
    total = value.total_seconds()
    if total < 120:
        return f"{total:.1f}s"
    if total < 7200:
        return f"{total / 60:.1f}m"
    if total < 172800:
        return f"{total / 3600:.1f}h"
    return f"{total / 86400:.1f}d"


def short(text: str | None, width: int = 60) -> str:
    """One line of at most ``width`` characters."""
    if not text:
        return NONE
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def compact(value: Any) -> str:
    """A JSON value on one line."""
    return json.dumps(to_data(value), separators=(",", ":"), ensure_ascii=False)
