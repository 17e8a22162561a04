"""OpenTelemetry tracing (``pip install 'durably[otel]'``): a span per run attempt and per step.

    from durably.contrib.opentelemetry import instrument

    instrument(durably)  # the global tracer provider; or tracer_provider=...

Call it in every process that triggers or runs jobs (the web app and the
workers). Only the OpenTelemetry *API* is needed here: the application
chooses the SDK, its exporters and its propagators, as with any instrumented
library.

- A trigger is a ``PRODUCER`` span, ``durably.trigger <job>``, child of the
  span current where it is made (a root if there is none), around the
  write. Its context is stored with the runs the trigger creates (the
  propagator's carrier: W3C ``traceparent`` and ``tracestate`` by default),
  in ``durably_runs.trace_context``.
- Each attempt of a run is a ``CONSUMER`` span, ``durably.run <job>``, child
  of its trigger's span, whichever process the worker is in; a run stored
  without a trace context (triggered by an instance not instrumented, or by
  a schedule) starts a trace of its own. A retry is a new attempt and a new
  span, in the same trace.
- Each step that runs is a span ``durably.step <name>``, child of the
  attempt's span. A step replayed from its stored result gets none: it does
  no work (its function is not called), and a span for it would count the
  step twice and show a duration that measures nothing; its span is in the
  trace of the attempt that ran it.
- The attempt's span is current while the job function runs, and a step's
  while its function runs (in a step thread or a task as well), so spans the
  job makes, and those of instrumented libraries it calls, are their children.
- Attributes: ``durably.job``, ``durably.run_id``, ``durably.attempt``,
  ``durably.queue`` and, on steps, ``durably.step`` and ``durably.step.index``;
  on a trigger ``durably.job``, ``durably.queue`` and, when it creates
  several runs at once, ``durably.runs``.
  An attempt or a step that raises has status ``ERROR`` and the exception
  recorded as a span event. A run that suspends on a durable wait ends its
  attempt's span without an error; it resumes in a new attempt span.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from .. import __version__
from ..app import Durably
from ..instrumentation import RunAttempt

__all__ = ["instrument", "is_instrumented", "uninstrument"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def instrument(
    durably: Durably,
    tracer_provider: TracerProvider | None = None,
    *,
    propagator: TextMapPropagator | None = None,
) -> None:
    """Trace ``durably``'s triggers, run attempts and steps in this process.

    Call it in every process that triggers or runs jobs: each traces its own.

    ``tracer_provider``: where spans go (None: the global one, looked up
    when each span starts). ``propagator``: how a trigger's trace context is
    stored and read back (None: the global one, W3C trace context unless
    configured otherwise). Calling it again replaces the earlier settings.
    """
    tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
    durably._runtime.instrumentation = OpenTelemetryInstrumentation(tracer, propagator)


def uninstrument(durably: Durably) -> None:
    """Stop tracing ``durably`` (spans already started end as usual)."""
    durably._runtime.instrumentation = None


def is_instrumented(durably: Durably) -> bool:
    """Whether :func:`instrument` traces ``durably`` in this process."""
    return isinstance(durably._runtime.instrumentation, OpenTelemetryInstrumentation)


class OpenTelemetryInstrumentation:
    """The :class:`~durably.instrumentation.Instrumentation` :func:`instrument` installs."""

    def __init__(self, tracer: Tracer, propagator: TextMapPropagator | None = None) -> None:
        self._tracer = tracer
        self._propagator = propagator

    @contextmanager
    def trigger(self, job_name: str, queue: str, runs: int) -> Iterator[str | None]:
        """A ``PRODUCER`` span around the trigger's write; its context is stored with the runs."""
        attributes: dict[str, str | int] = {"durably.job": job_name, "durably.queue": queue}
        if runs > 1:
            attributes["durably.runs"] = runs
        span = self._start(
            f"durably.trigger {job_name}", otel_context.get_current(), SpanKind.PRODUCER, attributes
        )
        with _current(span, end=True):
            carrier: dict[str, str] = {}
            if self._propagator is None:
                propagate.inject(carrier)
            else:
                self._propagator.inject(carrier)
            yield json.dumps(carrier, separators=(",", ":")) if carrier else None

    def wrap_run(self, run: RunAttempt, fn: F) -> F:
        start = functools.partial(
            self._start,
            f"durably.run {run.job_name}",
            self._extract(run.trace_context),
            SpanKind.CONSUMER,
            _run_attributes(run),
        )
        return cast(F, _traced(start, fn))

    def wrap_step(
        self, run: RunAttempt, step: str, index: int, fn: Callable[[], T]
    ) -> Callable[[], T]:
        start = functools.partial(
            self._start,
            f"durably.step {step}",
            # The job's context, read where the job calls step.run: the step
            # may run in another thread, whose context lacks the run's span.
            otel_context.get_current(),
            SpanKind.INTERNAL,
            {**_run_attributes(run), "durably.step": step, "durably.step.index": index},
        )
        return _traced(start, fn)

    def _extract(self, trace_context: str | None) -> otel_context.Context:
        """The trigger's context, or an empty one: a run is not part of its worker's trace."""
        if trace_context is None:
            return otel_context.Context()
        try:
            stored = json.loads(trace_context)
        except ValueError:  # written by something else: the run starts a trace of its own
            stored = None
        if not isinstance(stored, dict):
            return otel_context.Context()
        carrier = {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
        empty = otel_context.Context()
        if self._propagator is None:
            return propagate.extract(carrier, context=empty)
        return self._propagator.extract(carrier, context=empty)

    def _start(
        self,
        name: str,
        parent: otel_context.Context,
        kind: SpanKind,
        attributes: dict[str, str | int],
    ) -> Span:
        return self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def _traced(start: Callable[[], Span], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` in a span of its own, started by ``start()`` at each call and current within.

    A coroutine function stays one. A plain function that returns an
    awaitable (``lambda: fetch(url)``) has its span end when that is awaited.
    """
    if inspect.iscoroutinefunction(fn):

        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            with _current(start(), end=True):
                return await fn(*args, **kwargs)

        return traced_async

    def traced(*args: Any, **kwargs: Any) -> Any:
        span = start()
        with _current(span, end=False):
            result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return _ended_when_awaited(span, result)
        span.end()
        return result

    return traced


@contextmanager
def _current(span: Span, *, end: bool) -> Iterator[Span]:
    """``span`` current within; an exception marks it failed (and always ends it).

    Only an ``Exception`` is a failure: a run that suspends on a wait, or a
    worker that shuts down, unwinds the job with a ``BaseException``.
    """
    try:
        with trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield span
    except Exception as exc:
        _failed(span, exc)
        span.end()
        raise
    except asyncio.CancelledError:  # an async step cut off: the run was told to stop
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        span.end()
        raise
    except BaseException:
        span.end()
        raise
    if end:
        span.end()


def _failed(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    message = str(exc)
    description = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    span.set_status(Status(StatusCode.ERROR, description))


async def _ended_when_awaited(span: Span, awaitable: Awaitable[T]) -> T:
    with _current(span, end=True):
        return await awaitable


def _run_attributes(run: RunAttempt) -> dict[str, str | int]:
    return {
        "durably.job": run.job_name,
        "durably.run_id": run.run_id,
        "durably.attempt": run.attempt,
        "durably.queue": run.queue,
    }
