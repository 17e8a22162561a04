"""The database as event-loop code reaches it, without ever blocking the loop.

SQLite's drivers are blocking C code (libSQL's even holds the GIL while it
waits for a lock), so an async DBAPI would not help: the waiting is done by
:class:`~durably.storage.Database` in Python, in durably's database
threads. :class:`AsyncDatabase` is the one place that decides how each kind
of request gets there: a write batch joins the batches the loop's other
tasks write in the same turn (:mod:`durably.storage.commit.loop`); a read,
a write transaction, or any blocking call runs in a database thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from typing_extensions import ParamSpec

from ..bridge import Threads
from .choice import AnyDatabase
from .commit.loop import LoopCommit
from .statements import Batch, Outcome

T = TypeVar("T")
P = ParamSpec("P")


class AsyncDatabase:
    """A :class:`Database` for coroutines: the async driver's storage."""

    def __init__(self, db: AnyDatabase, threads: Threads) -> None:
        self.db = db
        self.threads = threads
        self._loop_commit = LoopCommit(db, threads)

    def write_batch(self, batch: Batch) -> asyncio.Future[list[Outcome]]:
        """Commit ``batch`` with the batches the loop's other tasks write in this turn."""
        return self._loop_commit.write(batch)

    async def write_batches(self, batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        """Several batches in one trip: each one's outcomes, or its own error."""
        futures = [self._loop_commit.write(batch) for batch in batches]
        results: list[list[Outcome] | Exception] = []
        for future in futures:
            try:
                results.append(await future)
            except Exception as exc:
                results.append(exc)
        return results

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.threads.run(self.db.read, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.threads.run(self.db.write, fn, *args)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await a blocking call (an API method, a migration) run in a database thread."""
        return await self.threads.run(fn, *args, **kwargs)
