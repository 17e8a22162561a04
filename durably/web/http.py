"""The framework-neutral request and response, and the errors hooks raise.

The ASGI and WSGI adapters translate to and from these, so the handler
(:mod:`durably.web.handler`) is written once. ``Request`` is also what
``Auth.authenticate`` receives: enough to read a header, a cookie or a
query parameter without knowing the framework, and ``raw`` (the ASGI scope
or the WSGI environ) for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..values import to_json
from .effects import Flow

JSON_TYPE = "application/json"
SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    # Proxies such as nginx buffer responses unless told not to; a buffered
    # event stream arrives all at once, when it ends.
    ("x-accel-buffering", "no"),
)


class HTTPError(Exception):
    """Raised by an auth hook (or by durably) to answer with ``status_code`` and ``{"error": message}``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class Request:
    """One HTTP request, as every hook sees it whatever the server.

    ``path`` is relative to where the app is mounted (``/runs``); header
    names are lower case; ``query`` maps each parameter to all its values.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    body: bytes = b""
    raw: Any = field(default=None, repr=False, compare=False)
    """The ASGI scope or the WSGI environ, for what the fields above do not carry."""

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Response:
    """A whole response: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, (("content-type", JSON_TYPE),), dumps(value))


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def dumps(value: Any) -> bytes:
    """JSON as the TS handler writes it: datetimes as ISO-8601 UTC with milliseconds and ``Z``."""
    return json.dumps(value, default=_default, separators=(",", ":")).encode()


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default(value: Any) -> Any:
    """A datetime as TS writes one; another value JSON has no type for (in a run's input or
    output: a date, a set, a dataclass) as durably stores it, in its typed envelope; one of
    a serializer's own types (``Durably(serializer=...)``) as its ``repr``."""
    if isinstance(value, datetime):
        return iso(value)
    return to_json(value, repr)


@dataclass(frozen=True)
class Stream:
    """An event stream: its headers, and the flow that writes its frames."""

    headers: tuple[tuple[str, str], ...]
    body: Flow[None]


Result = Response | Stream
