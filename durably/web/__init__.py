"""durably's HTTP API, live event streams and dashboard, for ASGI and WSGI apps.

``asgi_app(durably)`` and ``wsgi_app(durably)`` serve the routes of
Durably-TS's ``createDurablyHandler`` (so ``@coji/durably-react`` works
against a Python backend), durably's own (retry, attempts, logs, workers,
stats, schedules), the durable-wait routes of TS's main branch and a dashboard. See docs/web.md.
"""

from __future__ import annotations

from .asgi import asgi_app
from .auth import Auth, RunFilter, SignalRequest, TriggerRequest
from .http import HTTPError, Request
from .wsgi import wsgi_app

__all__ = [
    "Auth",
    "HTTPError",
    "Request",
    "RunFilter",
    "SignalRequest",
    "TriggerRequest",
    "asgi_app",
    "wsgi_app",
]
