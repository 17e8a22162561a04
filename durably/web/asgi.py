"""The HTTP API as a plain ASGI application (no framework needed).

Mount it where you like (``Mount("/durably", app=asgi_app(durably))`` in
Starlette, ``app.mount(...)`` in FastAPI). Every durably call is awaited
through its ``_async`` twin, and event streams wait on the loop, so a
request never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from typing_extensions import Unpack

from ..events import Event
from .effects import Call, Effect, Flow, Hook, Inbox, Listen, Send, Wait
from .handler import AppOptions, Handler
from .http import Request, Response, Stream, error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
SendFn = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, SendFn], Awaitable[None]]

MAX_BODY = 1024 * 1024
logger = logging.getLogger("durably.web")


def asgi_app(durably: Any, **options: Unpack[AppOptions]) -> ASGIApp:
    """An ASGI app serving durably's HTTP API, event streams and (``dashboard``) dashboard.

    ``options`` are :class:`~durably.web.handler.AppOptions` (``auth``,
    ``allow_unauthenticated``, ``dashboard``, ``sse_throttle``), each optional;
    :class:`~durably.web.handler.Handler` holds their defaults.
    """
    handler = Handler(durably, **options)

    async def app(scope: Scope, receive: Receive, send: SendFn) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"durably.web serves http, not {scope['type']}")
        path, root = _route_path(scope)
        if path == "":
            await _send_response(send, _redirect(root + "/", scope))
            return
        request = await _request(scope, receive, path)
        if isinstance(request, Response):
            await _send_response(send, request)
            return
        adapter = _Adapter(receive, send)
        result = await _drive(handler.handle(request), adapter)
        if isinstance(result, Stream):
            await _stream(result, adapter)
        else:
            await _send_response(send, result)

    return app


def _route_path(scope: Scope) -> tuple[str, str]:
    """The path under the mount point, and the mount point (``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path, root


def _redirect(location: str, scope: Scope) -> Response:
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"{location}?{query}" if query else location
    return Response(308, (("location", target),), b"")


async def _request(scope: Scope, receive: Receive, path: str) -> Request | Response:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return error_response(400, "The client went away")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            return error_response(413, "The request body is too large")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return Request(scope["method"], path, headers, query, body, raw=scope)


async def _lifespan(receive: Receive, send: SendFn) -> None:
    """Served on its own (not mounted), the app has nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _AsyncInbox(Inbox):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: collections.deque[Event] = collections.deque()
        self.ready = asyncio.Event()
        self.gone = False
        self.unsubscribe: Callable[[], None] = lambda: None

    def deliver(self, event: Event) -> None:
        """Called in whichever thread emitted the event."""
        # RuntimeError: the loop has closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: Event) -> None:
        self.events.append(event)
        self.ready.set()

    def close(self) -> None:
        self.unsubscribe()


class _Adapter:
    """Performs effects on the event loop."""

    def __init__(self, receive: Receive, send: SendFn) -> None:
        self.receive = receive
        self.send = send
        self.inbox: _AsyncInbox | None = None
        self.headers: list[tuple[bytes, bytes]] | None = None
        """A stream's headers, until its first chunk is sent."""

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, (Call, Hook)):
            return await effect.run_async()
        if isinstance(effect, Listen):
            inbox = _AsyncInbox(asyncio.get_running_loop())
            inbox.unsubscribe = effect.durably.on(None, _filtered(effect, inbox))
            self.inbox = inbox
            return inbox
        if isinstance(effect, Wait):
            return await _wait(effect)
        if isinstance(effect, Send):
            if self.inbox is not None and self.inbox.gone:
                return False
            if self.headers is not None:  # sent with the first chunk, as a WSGI server does
                await self.send(
                    {"type": "http.response.start", "status": 200, "headers": self.headers}
                )
                self.headers = None
            await self.send({"type": "http.response.body", "body": effect.data, "more_body": True})
            return True
        raise TypeError(f"unknown effect {effect!r}")


def _filtered(effect: Listen, inbox: _AsyncInbox) -> Callable[[Event], None]:
    def listener(event: Event) -> None:
        if effect.accept(event):
            inbox.deliver(event)

    return listener


async def _wait(effect: Wait) -> list[Event] | None:
    inbox = effect.inbox
    assert isinstance(inbox, _AsyncInbox)
    if not inbox.events and not inbox.gone:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(inbox.ready.wait(), effect.timeout)
    if inbox.gone:
        return None
    inbox.ready.clear()
    events = list(inbox.events)
    inbox.events.clear()
    return events


async def _drive(flow: Flow[Any], adapter: _Adapter) -> Any:
    """Run a flow to its end, performing its effects; errors go back into the flow."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await adapter.perform(effect)
        except Exception as exc:
            error = exc


async def _stream(stream: Stream, adapter: _Adapter) -> None:
    send = adapter.send
    adapter.headers = _raw(stream.headers)
    watcher = asyncio.ensure_future(_watch_disconnect(adapter.receive, adapter))
    try:
        await _drive(stream.body, adapter)
        await adapter.perform(Send(b""))  # the headers, if nothing was written yet
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:  # the client went away mid-write
        pass
    except Exception:
        logger.exception("durably.web: an event stream failed")
    finally:
        watcher.cancel()
        stream.body.close()


async def _watch_disconnect(receive: Receive, adapter: _Adapter) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    inbox = adapter.inbox
    if inbox is not None:
        inbox.gone = True
        inbox.ready.set()


async def _send_response(send: SendFn, response: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": _raw(response.headers),
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _raw(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
