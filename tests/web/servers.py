"""Real HTTP servers for the web tests: uvicorn (ASGI) and wsgiref (WSGI), each in a thread.

Both mount durably's app under ``/durably`` inside a host app, as a user would:
a Starlette app whose lifespan runs the asyncio engine, and a Flask app
behind werkzeug's ``DispatcherMiddleware`` with the thread engine.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from durably import Durably
from durably.web import asgi_app, wsgi_app

MOUNT = "/durably"


@contextlib.contextmanager
def serve_asgi(durably: Durably, **options: Any) -> Iterator[str]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await durably.start_async()
        yield
        await durably.stop_async(timeout=5)

    host = Starlette(routes=[Mount(MOUNT, app=asgi_app(durably, **options))], lifespan=lifespan)
    config = uvicorn.Config(
        host, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started and bool(server.servers), thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}{MOUNT}"
    finally:
        server.should_exit = True
        thread.join(15)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # wsgiref's backlog of 5 drops the connections of a client that opens
    # many at once (a page with several event streams); they come a second later.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(durably: Durably, **options: Any) -> Iterator[str]:
    host = Flask("host")
    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {MOUNT: wsgi_app(durably, **options)})  # type: ignore[method-assign]
    server = make_server(
        "127.0.0.1", 0, host, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    durably.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{MOUNT}"
    finally:
        durably.stop(timeout=5)
        server.shutdown()
        server.server_close()
        thread.join(15)


SERVERS: dict[str, Callable[..., contextlib.AbstractContextManager[str]]] = {
    "asgi": serve_asgi,
    "wsgi": serve_wsgi,
}


def _wait_for(ready: Callable[[], bool], thread: threading.Thread) -> None:
    import time

    deadline = time.monotonic() + 20
    while not ready():
        assert thread.is_alive(), "the server thread died"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
