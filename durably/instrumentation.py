"""The seam a tracer plugs into: a trigger, a run attempt, a step's function.

A ``Durably`` instance has at most one :class:`Instrumentation` (none by
default; :mod:`durably.contrib.opentelemetry` installs one). durably calls it
at three points, each guarded by one ``is None`` check, so an instance
without it pays nothing more:

- a trigger's write runs within :meth:`~Instrumentation.trigger`, which
  yields the text stored with the runs it creates
  (``durably_runs.trace_context``), so that the worker that runs them, in
  any process, can continue the trace;
- a worker runs the job function it returns from
  :meth:`~Instrumentation.wrap_run` for each attempt of a run;
- a step that runs (not one replayed from its stored result) runs the
  function :meth:`~Instrumentation.wrap_step` returns.

Wrappers rather than events, because a tracer must make its span *current*
while the user's code runs, so that the spans that code makes are children
of it; an event fires before or after that code, never around it. The step
wrapper is asked for where the job calls ``step.run``, before any hop to a
step thread, so it can carry the job's context into that thread (an event
loop's default executor does not copy context variables).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RunAttempt:
    """The run attempt a worker is about to run, as an :class:`Instrumentation` sees it."""

    run_id: str
    job_name: str
    queue: str
    attempt: int
    """1 for a run's first attempt; each retry after a failure starts the next."""
    trace_context: str | None
    """What :meth:`Instrumentation.trigger` yielded when the run was triggered."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RunAttempt:
        """From the claimed run's row (the ``durably_runs`` columns)."""
        return cls(row["id"], row["job_name"], row["queue"], row["attempt"], row["trace_context"])


class Instrumentation(Protocol):
    """What durably calls to trace triggers, run attempts and steps."""

    def trigger(self, job_name: str, queue: str, runs: int) -> AbstractContextManager[str | None]:
        """Around the write of a trigger of ``runs`` runs of ``job_name``.

        Entered in the trigger's thread or task; what it yields is stored
        with the runs the trigger creates (None: nothing). An exception the
        write raises (a conflict, a database error) passes through it.
        """

    def wrap_run(self, run: RunAttempt, fn: F) -> F:
        """The job function ``fn`` (``def`` or ``async def``, called with the step context
        and the input) as this attempt calls it. Exceptions must pass through unchanged."""

    def wrap_step(
        self, run: RunAttempt, step: str, index: int, fn: Callable[[], T]
    ) -> Callable[[], T]:
        """A step's function as it runs (a coroutine function stays one).

        Called in the job's thread or task when the step starts; the wrapper
        may be called in a step thread. Exceptions must pass through unchanged.
        """
