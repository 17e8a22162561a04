"""FastAPI (and Starlette): a lifespan that runs the asyncio engine, and a dependency.

    from fastapi import Depends, FastAPI
    from durably import Durably
    from durably.contrib.fastapi import get_durably, lifespan

    app = FastAPI(lifespan=lifespan(durably))

    @app.post("/reports")
    async def create(durably: Durably = Depends(get_durably)): ...

The lifespan migrates, starts the asyncio engine on the server's event loop
and, when the server shuts down (uvicorn on SIGTERM), stops it: no more
claims, in-flight runs get ``stop_timeout`` seconds, the rest are handed
back for another worker. An app with a lifespan of its own enters
:func:`running` inside it. Only Starlette (which FastAPI is built on) is
imported: the same lifespan serves a Starlette app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.requests import Request

from ..app import Durably
from ..config import DEFAULT_SIGNAL_STOP_TIMEOUT
from ..errors import DurablyError

__all__ = ["get_durably", "lifespan", "running"]


@asynccontextmanager
async def running(
    durably: Durably,
    *,
    migrate: bool = True,
    queues: Iterable[str] | None = None,
    stop_timeout: float | None = DEFAULT_SIGNAL_STOP_TIMEOUT,
) -> AsyncIterator[Durably]:
    """Run ``durably``'s asyncio engine for the life of the ``async with`` block."""
    if migrate:
        await durably.migrate_async()
    await durably.start_async(queues=queues)
    try:
        yield durably
    finally:
        await durably.stop_async(timeout=stop_timeout)


def lifespan(
    durably: Durably,
    *,
    migrate: bool = True,
    queues: Iterable[str] | None = None,
    stop_timeout: float | None = DEFAULT_SIGNAL_STOP_TIMEOUT,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=…)`` or ``Starlette(lifespan=…)``.

    It also puts ``durably`` on ``app.state.durably``, where
    :func:`get_durably` finds it.
    """

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        app.state.durably = durably
        async with running(durably, migrate=migrate, queues=queues, stop_timeout=stop_timeout):
            yield

    return app_lifespan


def get_durably(request: Request) -> Durably:
    """A dependency (``Depends(get_durably)``): the ``Durably`` the app's lifespan runs."""
    found = getattr(request.app.state, "durably", None)
    if not isinstance(found, Durably):
        raise DurablyError(
            "No Durably on this app: create it with lifespan=durably.contrib.fastapi.lifespan(...)"
        )
    return found
