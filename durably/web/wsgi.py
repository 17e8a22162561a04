"""The HTTP API as a plain WSGI application (no framework needed).

Mount it under a prefix of your Flask or Django app (e.g. with
``werkzeug.middleware.dispatcher.DispatcherMiddleware``). Event streams are
streaming responses: each open stream holds one of the server's threads,
so serve the app with a threaded server (gunicorn ``--threads``, or
``gthread``/``gevent`` workers), not one thread per process.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from typing_extensions import Unpack

from ..events import Event
from .effects import Call, Effect, Flow, Hook, Inbox, Listen, Send, Wait
from .handler import AppOptions, Handler
from .http import Request, Response, Stream, error_response

logger = logging.getLogger("durably.web")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MAX_BODY = 1024 * 1024
_REASONS = {
    200: "OK",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def wsgi_app(durably: Any, **options: Unpack[AppOptions]) -> WSGIApp:
    """A WSGI app serving durably's HTTP API, event streams and (``dashboard``) dashboard.

    ``options`` are :class:`~durably.web.handler.AppOptions` (``auth``,
    ``allow_unauthenticated``, ``dashboard``, ``sse_throttle``), each optional;
    :class:`~durably.web.handler.Handler` holds their defaults.
    """
    handler = Handler(durably, **options)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "":
            return _respond(start_response, _redirect(environ))
        request = _request(environ, path)
        if isinstance(request, Response):
            return _respond(start_response, request)
        result = _drive(handler.handle(request))
        if isinstance(result, Stream):
            start_response("200 OK", list(result.headers))
            return _frames(result.body)
        return _respond(start_response, result)

    return app


def _redirect(environ: dict[str, Any]) -> Response:
    location = environ.get("SCRIPT_NAME", "") + "/"
    query = environ.get("QUERY_STRING", "")
    return Response(308, (("location", f"{location}?{query}" if query else location),), b"")


def _request(environ: dict[str, Any], path: str) -> Request | Response:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return error_response(400, "Invalid Content-Length")
    if length > MAX_BODY:
        return error_response(413, "The request body is too large")
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    # PEP 3333: the path arrives decoded as latin-1; undo that for UTF-8 paths.
    path = path.encode("latin-1").decode("utf-8", "replace")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return Request(environ["REQUEST_METHOD"], path, headers, query, body, raw=environ)


class _QueueInbox(Inbox):
    def __init__(self) -> None:
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.unsubscribe: Callable[[], None] = lambda: None

    def close(self) -> None:
        self.unsubscribe()


def _perform(effect: Effect) -> Any:
    if isinstance(effect, (Call, Hook)):
        return effect.run()
    if isinstance(effect, Listen):
        inbox = _QueueInbox()
        accept = effect.accept

        def listener(event: Event) -> None:
            if accept(event):
                inbox.events.put(event)

        inbox.unsubscribe = effect.durably.on(None, listener)
        return inbox
    if isinstance(effect, Wait):
        assert isinstance(effect.inbox, _QueueInbox)
        events = effect.inbox.events
        try:
            found = [events.get(timeout=effect.timeout)]
        except queue.Empty:
            return []
        while not events.empty():
            found.append(events.get_nowait())
        return found
    raise TypeError(f"unknown effect {effect!r}")


def _drive(flow: Flow[Any]) -> Any:
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
            value = _perform(effect)
        except Exception as exc:
            error = exc


def _frames(body: Flow[None]) -> Iterator[bytes]:
    """The stream's chunks, as the server pulls them; closing it (the client left) ends the flow."""
    value: Any = None
    try:
        while True:
            effect = body.send(value)
            if isinstance(effect, Send):
                yield effect.data
                value = True
            else:
                value = _perform(effect)
    except StopIteration:
        return
    except Exception:
        logger.exception("durably.web: an event stream failed")
    finally:
        body.close()


def _respond(start_response: StartResponse, response: Response) -> list[bytes]:
    status = f"{response.status} {_REASONS.get(response.status, 'Unknown')}"
    start_response(status, list(response.headers))
    return [response.body]
