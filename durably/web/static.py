"""The dashboard's files, served from the package: no build step, no CDN.

Only the files listed here are served, read once from ``durably/web/static/``.
The page names its script and style relatively, so it works wherever the app
is mounted.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from ..status import RETRYABLE_STATUSES, RunStatus
from . import routes
from .http import Response

CONFIG_MARK = b"<!--DURABLY-CONFIG-->"

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
)
_PAGE_HEADERS = (
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
    ("x-frame-options", "DENY"),
    *_SECURITY_HEADERS,
)


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def config() -> dict[str, object]:
    """What the page's script needs to know: the routes and the statuses, from their one source."""
    return {
        "routes": {
            "runs": routes.RUNS,
            "run": routes.RUN,
            "steps": routes.STEPS,
            "attempts": routes.ATTEMPTS,
            "logs": routes.LOGS,
            "stats": routes.STATS,
            "workers": routes.WORKERS,
            "retry": routes.RETRY,
            "cancel": routes.CANCEL,
            "retrigger": routes.RETRIGGER,
            "runsSubscribe": routes.RUNS_SUBSCRIBE,
        },
        "statuses": [status.value for status in RunStatus],
        "retryable": sorted(status.value for status in RETRYABLE_STATUSES),
    }


@functools.lru_cache(maxsize=1)
def _page_body() -> bytes:
    # A JSON data block is not executed, so the page's CSP needs no inline script;
    # "<" is escaped so that no value can close the block.
    data = json.dumps(config()).replace("<", "\\u003c").encode()
    return _read("index.html").replace(CONFIG_MARK, data)


def page() -> Response:
    return Response(200, _PAGE_HEADERS, _page_body())


def asset(name: str) -> Response | None:
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    headers = (("content-type", content_type), ("cache-control", "no-cache"), *_SECURITY_HEADERS)
    return Response(200, headers, _read(name))
