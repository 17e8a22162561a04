"""A small HTTP and event-stream client on the standard library, for the tests' real requests."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One request; ``body`` is sent as JSON, ``raw`` as is."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    sent_headers = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        sent_headers.setdefault("Content-Type", "application/json")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, body=data, headers=sent_headers)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


class EventStream:
    """An open ``text/event-stream`` response, read frame by frame."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", target, headers=dict(headers or {}))
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}

    def next(self) -> dict[str, Any] | None:
        """The next ``data:`` frame as JSON; None when the server ended the stream."""
        data: list[str] = []
        while True:
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if text.startswith("data: "):
                data.append(text[len("data: ") :])
            elif text == "" and data:
                return dict(json.loads("\n".join(data)))

    def until(self, found: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every frame up to and including the first that ``found`` accepts."""
        frames = []
        while True:
            frame = self.next()
            assert frame is not None, f"stream ended before the frame; got {frames}"
            frames.append(frame)
            if found(frame):
                return frames

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    """``check()``'s first truthy value, retried until ``timeout`` (a deadline, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)
