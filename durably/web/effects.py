"""What the handler asks its server adapter to do, so that it is written once.

The handler's routes and streams are generators: they yield an effect and
are sent its result, the way :mod:`durably.core.operation` yields database
requests. The WSGI adapter performs each effect by blocking (``get_run``,
a ``queue.Queue``); the ASGI adapter awaits it (``get_run_async``, an
``asyncio`` wait), so the event loop is never blocked by a route.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..events import Event

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """Call ``target.name(...)``; the ASGI adapter awaits ``target.name_async(...)`` instead."""

    target: Any
    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def run(self) -> Any:
        return getattr(self.target, self.name)(*self.args, **self.kwargs)

    async def run_async(self) -> Any:
        return await getattr(self.target, f"{self.name}_async")(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Hook:
    """Call a user's hook, a plain function or a coroutine function."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def run(self) -> Any:
        result = self.fn(*self.args)
        if inspect.isawaitable(result):
            return asyncio.run(_awaited(result))
        return result

    async def run_async(self) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(*self.args)
        # A plain hook may do I/O (a session lookup): keep it off the loop.
        result = await asyncio.to_thread(self.fn, *self.args)
        if inspect.isawaitable(result):
            return await result
        return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@dataclass(frozen=True)
class Listen:
    """Subscribe to ``durably``'s events that ``accept`` takes; the adapter returns an :class:`Inbox`."""

    durably: Any
    accept: Callable[[Event], bool]


class Inbox:
    """Events delivered by the event system's threads, waiting for a stream to take them."""

    def close(self) -> None:  # pragma: no cover - overridden by each adapter
        raise NotImplementedError


@dataclass(frozen=True)
class Wait:
    """Wait up to ``timeout`` seconds for events; the result is the list (maybe empty),
    or None once the client has gone away."""

    inbox: Inbox
    timeout: float


@dataclass(frozen=True)
class Send:
    """Write a chunk of an event stream; the result is False once the client has gone away."""

    data: bytes


Effect = Call | Hook | Listen | Wait | Send
Flow = Generator[Effect, Any, T]
