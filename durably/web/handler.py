"""The HTTP API, framework-neutral: a :class:`Request` in, a response or an event stream out.

Every request runs the same way: ``auth.authenticate`` (when there is an
``auth``), then, for a route that changes state, the write checks (below),
then the route. A hook's :class:`HTTPError` and durably's own errors
(``NotFoundError`` → 404, ``ConflictError`` → 409, ``ValidationError`` →
400...) become ``{"error": message}`` with their status; anything else is
logged and answered 500 without its details.

The write checks keep a state-changing route from being reached by a page
of another site: without ``auth``, such routes answer 403 unless the app
said ``allow_unauthenticated=True``; a body must be JSON (a plain HTML form
cannot send that), and a browser request from a page of another site
(``Sec-Fetch-Site: cross-site``, or an ``Origin`` that is not the
``Host``) is refused: no form and no ``fetch`` of another site can make a
logged-in browser cancel or delete a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ..app import Durably
from ..errors import DurablyError, ValidationError
from . import routes, static
from .api import Session, route_table
from .auth import Auth
from .effects import Flow, Hook
from .http import JSON_TYPE, HTTPError, Request, Response, Result, error_response
from .streams import Pacing

logger = logging.getLogger("durably.web")

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
NOT_FOUND = Response(404, (("content-type", "text/plain; charset=utf-8"),), b"Not Found")


class AppOptions(TypedDict, total=False):
    """The options :func:`~durably.web.asgi_app` and :func:`~durably.web.wsgi_app` share.

    Defined once, here, for both: each app takes them as keywords
    (``**options: Unpack[AppOptions]``, so a type checker checks each one
    at the call) and hands them to :class:`Handler`, whose signature holds
    their defaults and which validates them.
    """

    auth: Auth | None
    allow_unauthenticated: bool
    dashboard: bool
    sse_throttle: float


class Handler:
    """One mounted API: the durably instance, its auth, and the routing table."""

    def __init__(
        self,
        durably: Any,
        *,
        auth: Auth | None = None,
        allow_unauthenticated: bool = False,
        dashboard: bool = True,
        sse_throttle: float = 0.1,
    ) -> None:
        if not isinstance(durably, Durably):
            raise ValidationError(f"expected a Durably instance, got {type(durably).__name__}")
        if auth is not None and not isinstance(auth, Auth):
            raise ValidationError("auth must be a durably.web.Auth")
        if (
            isinstance(sse_throttle, bool)
            or not isinstance(sse_throttle, (int, float))
            or not math.isfinite(sse_throttle)
        ):
            raise ValidationError("sse_throttle must be a number of seconds (0: no throttling)")
        self.durably = durably
        self.auth = auth
        self.allow_unauthenticated = allow_unauthenticated
        self.dashboard = dashboard
        self.pacing = Pacing(
            throttle=float(sse_throttle),
            poll=max(0.25, float(durably.settings.polling_interval)),
        )
        self.routes = route_table()

    def handle(self, request: Request) -> Flow[Result]:
        """Answer one request; never raises."""
        try:
            ctx = None
            if self.auth is not None:
                ctx = yield Hook(self.auth.authenticate, (request,))
            key = (request.method, request.path)
            if key not in self.routes:
                return self._page(request)
            route, changes_state = self.routes[key]
            if changes_state:
                self._check_write(request)
            session = Session(self.durably, self.auth, ctx, self.pacing)
            return (yield from route(session, request))
        except HTTPError as exc:
            return error_response(exc.status_code, exc.message)
        except DurablyError as exc:
            return error_response(exc.status_code, str(exc))
        except Exception:
            logger.exception("durably.web: %s %s failed", request.method, request.path)
            return error_response(500, "Internal server error")

    def _page(self, request: Request) -> Response:
        """The dashboard's page and files, or 404."""
        if not self.dashboard or request.method != "GET":
            return NOT_FOUND
        if request.path == routes.DASHBOARD:
            return static.page()
        if request.path.startswith(routes.STATIC_PREFIX):
            found = static.asset(request.path[len(routes.STATIC_PREFIX) :])
            if found is not None:
                return found
        return NOT_FOUND

    def _check_write(self, request: Request) -> None:
        if self.auth is None and not self.allow_unauthenticated:
            raise HTTPError(
                403,
                "This route changes state: configure auth=Auth(...) "
                "or pass allow_unauthenticated=True",
            )
        if _cross_site(request.headers):
            raise HTTPError(403, "Cross-site requests may not change state")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in FORM_TYPES or (request.body and content_type != JSON_TYPE):
            raise HTTPError(415, "The request body must be JSON (Content-Type: application/json)")


def _cross_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser sent this from a page of another site.

    Browsers send ``Sec-Fetch-Site`` (recent ones) and ``Origin`` (with
    every POST); a client that is not a browser sends neither and passes.
    """
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    hosts = {headers.get("host"), headers.get("x-forwarded-host")}
    return urlsplit(origin).netloc not in hosts
