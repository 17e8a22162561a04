"""The dashboard's files, served from the package: no build step, no CDN.

Only the files listed here are served, read once from ``durably/web/static/``.
The page names its script and style relatively, so it works wherever the app
is mounted.
"""

from __future__ import annotations

import functools
from importlib import resources

from .http import Response

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


def page() -> Response:
    return Response(200, _PAGE_HEADERS, _read("index.html"))


def asset(name: str) -> Response | None:
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    headers = (("content-type", content_type), ("cache-control", "no-cache"), *_SECURITY_HEADERS)
    return Response(200, headers, _read(name))
