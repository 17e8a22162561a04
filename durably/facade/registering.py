"""Registering jobs and declaring queues: ``@durably.job`` and ``durably.queue``.

A job's type comes from its models when it declares them
(``input=``/``output=``), else from its function, so that ``trigger`` and
``run.output`` are typed for the checker (:class:`~durably.jobs.Job`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from .. import config
from ..errors import ValidationError
from ..flow import QueueLimits
from ..io_models import check_model
from ..jobs import (
    AsyncJobFunction,
    InputModelJobDecorator,
    Job,
    JobDecorator,
    JobFunction,
    JobHost,
    ModelJobDecorator,
    OutputModelJobDecorator,
)
from ..retry import Retry, check_retry
from ..triggers import DEFAULT_PRIORITY, DEFAULT_QUEUE, check_priority, check_queue
from .base import FacadeBase

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class JobOptions:
    """A job's validated options (see :meth:`Durably.job`)."""

    retry: Retry | None
    queue: str
    priority: int
    timeout: float | None
    max_recoveries: int | None
    input_model: type | None = None
    output_model: type | None = None


class Registering(FacadeBase):
    """The jobs and queue limits a ``Durably`` knows."""

    @overload
    def job(
        self,
        name: str,
        *,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        max_recoveries: int | config.Inherit | None = config.INHERIT,
        input: type[InputT],
        output: type[OutputT],
    ) -> ModelJobDecorator[InputT, OutputT]: ...
    @overload
    def job(
        self,
        name: str,
        *,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        max_recoveries: int | config.Inherit | None = config.INHERIT,
        input: type[InputT],
        output: None = None,
    ) -> InputModelJobDecorator[InputT]: ...
    @overload
    def job(
        self,
        name: str,
        *,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        max_recoveries: int | config.Inherit | None = config.INHERIT,
        input: None = None,
        output: type[OutputT],
    ) -> OutputModelJobDecorator[OutputT]: ...
    @overload
    def job(
        self,
        name: str,
        *,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        max_recoveries: int | config.Inherit | None = config.INHERIT,
        input: None = None,
        output: None = None,
    ) -> JobDecorator: ...

    @overload
    def job(self, name: AsyncJobFunction[InputT, OutputT]) -> Job[InputT, OutputT]: ...

    @overload
    def job(self, name: JobFunction[InputT, OutputT]) -> Job[InputT, OutputT]: ...

    def job(
        self,
        name: Any,
        *,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        max_recoveries: int | config.Inherit | None = config.INHERIT,
        input: type | None = None,
        output: type | None = None,
    ) -> Any:
        """Register a job: ``@durably.job("name")`` (or bare ``@durably.job``: the function name).

        The function may be ``def job(step, input)`` or ``async def job(step,
        input)``; either engine runs either kind. ``retry`` retries its
        failed runs (:class:`~durably.Retry`); its runs go to ``queue`` with
        ``priority`` (higher first) unless a trigger says otherwise;
        ``timeout`` fails an attempt that runs longer (seconds);
        ``max_recoveries`` overrides the instance's setting for its runs.
        ``input`` and ``output`` are models (a pydantic model class or a
        dataclass) its input and output are checked against and converted to
        (:mod:`durably.io_models`).
        """
        if max_recoveries is config.INHERIT:
            max_recoveries = self._runtime.settings.max_recoveries
        options = JobOptions(
            retry=check_retry(retry, "A job's"),
            queue=check_queue(queue),
            priority=check_priority(priority),
            timeout=config.check_timeout(timeout),
            max_recoveries=config.check_max_recoveries(max_recoveries),
            input_model=check_model(input, "A job's input model"),
            output_model=check_model(output, "A job's output model"),
        )
        if callable(name):
            return self._register(name.__name__, name, options)

        def decorator(fn: Any) -> Any:
            return self._register(name, fn, options)

        return decorator

    def _register(self, name: str, fn: Any, options: JobOptions) -> Job[Any, Any]:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValidationError("A job name must be a non-empty string of at most 255 characters")
        registry = self._registry
        existing = registry.get(name)
        if existing is not None:
            if existing.fn is fn:
                return existing
            raise ValidationError(f'Job "{name}" is already registered with a different function')
        # This part is always the Durably its jobs trigger through.
        job: Job[Any, Any] = Job(
            cast(JobHost, self),
            name,
            fn,
            max_recoveries=options.max_recoveries,
            retry=options.retry,
            queue=options.queue,
            priority=options.priority,
            timeout=options.timeout,
            input_model=options.input_model,
            output_model=options.output_model,
            serializer=self._runtime.serializer,
        )
        registry[name] = job
        return job

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
    ) -> QueueLimits:
        """Declare a queue's limits; every claim of this instance keeps them.

        ``concurrency``: at most that many runs of the queue are leased at
        once, across all workers and processes. ``rate_limit=(count,
        per_seconds)``: at most ``count`` runs of the queue start (are
        claimed) in any ``per_seconds`` window. Both are counted in the
        database when a run is claimed, so every process that runs the
        queue's jobs must declare the same limits. Declaring the same limits
        again returns them; different ones raise :class:`ValidationError`.
        """
        return self._runtime.queues.declare(
            QueueLimits(name, concurrency=concurrency, rate_limit=rate_limit)
        )

    def get_job(self, name: str) -> Job[Any, Any] | None:
        return self._registry.get(name)

    @property
    def jobs(self) -> Mapping[str, Job[Any, Any]]:
        return dict(self._registry)
