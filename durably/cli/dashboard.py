"""``durably dashboard``: the HTTP API and dashboard (:mod:`durably.web`) on a port of its own.

    durably dashboard myapp.jobs:durably                 # http://127.0.0.1:8000/
    durably dashboard --url sqlite:///app.db --port 9000

It serves :func:`durably.web.wsgi_app` from the standard library's WSGI
server, one thread per request (an event stream holds its thread while it
is open), so it needs nothing installed beyond durably. It binds to
localhost unless told otherwise. There, anyone who can reach the port is on
this machine, and the dashboard's actions (retry, cancel, delete, trigger)
are allowed; bound to another address, they answer 403 unless
``--allow-unauthenticated`` says the network in front of it decides who
comes in. Mount the app in your own web app to put your authentication in
front of it (docs/web.md).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .common import EXIT_OK, opened


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open event stream does not keep the process alive
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request, event streams included, is noise for a dashboard


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    database: argparse.ArgumentParser,
) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        parents=[database],
        help="serve the HTTP API and dashboard",
        description="Serve durably's HTTP API and dashboard (docs/web.md).",
    )
    dashboard.add_argument(
        "target", nargs="?", metavar="APP", help="MODULE:ATTRIBUTE of your Durably instance"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: localhost)"
    )
    dashboard.add_argument(
        "--port", type=int, default=8000, help="port (default 8000; 0: any free)"
    )
    dashboard.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow the dashboard's actions on an address other than localhost",
    )
    dashboard.set_defaults(handler=serve_dashboard)


def serve_dashboard(args: argparse.Namespace) -> int:
    from ..web import wsgi_app  # the web layer only when it is served

    args.app = args.target or args.app
    allow = args.allow_unauthenticated or _is_loopback(args.host)
    with opened(args) as durably:
        app = wsgi_app(durably, allow_unauthenticated=allow)
        with make_server(
            args.host, args.port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        ) as server:
            url = f"http://{args.host}:{server.server_port}/"
            print(f"durably dashboard at {url} (Ctrl-C stops it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever()
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
