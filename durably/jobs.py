"""Jobs: the functions durably runs, and the handle used to trigger them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from sqlalchemy.engine import Connection

from .bridge import blocking
from .config import DEFAULT_MAX_RECOVERIES
from .core.enqueue import EnqueueRequest
from .errors import ValidationError
from .io_models import conform
from .models import Run
from .retry import Retry
from .serialization import DEFAULT_SERIALIZER, Serializer
from .triggers import (
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    build_request,
    plain_request,
    validate_labels,
)

__all__ = [
    "AsyncJobFunction",
    "InputModelJobDecorator",
    "Job",
    "JobDecorator",
    "JobFunction",
    "JobHost",
    "ModelJobDecorator",
    "OutputModelJobDecorator",
    "TriggerItem",
    "build_request",
    "validate_labels",
]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from .context import AsyncStepContext, StepContext

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

JobFunction = Callable[["StepContext", InputT], OutputT]
AsyncJobFunction = Callable[["AsyncStepContext", InputT], Awaitable[OutputT]]


class JobHost(Protocol):
    """What a :class:`Job` asks of the ``Durably`` it is registered on."""

    def enqueue(
        self, requests: Sequence[EnqueueRequest], connection: Connection | None = None
    ) -> list[Run]: ...

    async def enqueue_async(
        self, requests: Sequence[EnqueueRequest], connection: AsyncConnection | None = None
    ) -> list[Run]: ...

    def wait_for_run(self, run_id: str, timeout: float | None = None) -> Run: ...

    async def wait_for_run_async(self, run_id: str, timeout: float | None = None) -> Run: ...

    def get_run(self, run_id: str) -> Run | None: ...

    async def get_run_async(self, run_id: str) -> Run | None: ...

    def get_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]: ...

    async def get_runs_async(
        self,
        *,
        status: str | Sequence[str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]: ...


class JobDecorator(Protocol):
    """What ``@durably.job("name")`` returns: takes a ``def`` or an ``async def`` job."""

    @overload
    def __call__(self, fn: AsyncJobFunction[InputT, OutputT], /) -> Job[InputT, OutputT]: ...

    @overload
    def __call__(self, fn: JobFunction[InputT, OutputT], /) -> Job[InputT, OutputT]: ...


ModelInputT = TypeVar("ModelInputT")
ModelOutputT = TypeVar("ModelOutputT")


class ModelJobDecorator(Protocol[ModelInputT, ModelOutputT]):
    """``@durably.job(name, input=In, output=Out)``: a job typed by its models.

    The function gets an ``In``; what it returns is converted to an ``Out``,
    so its own return type does not matter to the job's type.
    """

    @overload
    def __call__(
        self, fn: Callable[[AsyncStepContext, ModelInputT], Awaitable[object]], /
    ) -> Job[ModelInputT, ModelOutputT]: ...

    @overload
    def __call__(
        self, fn: Callable[[StepContext, ModelInputT], object], /
    ) -> Job[ModelInputT, ModelOutputT]: ...


class InputModelJobDecorator(Protocol[ModelInputT]):
    """``@durably.job(name, input=In)``: typed by its input model and its function's return."""

    @overload
    def __call__(
        self, fn: AsyncJobFunction[ModelInputT, OutputT], /
    ) -> Job[ModelInputT, OutputT]: ...

    @overload
    def __call__(self, fn: JobFunction[ModelInputT, OutputT], /) -> Job[ModelInputT, OutputT]: ...


class OutputModelJobDecorator(Protocol[ModelOutputT]):
    """``@durably.job(name, output=Out)``: typed by its function's input and its output model."""

    @overload
    def __call__(
        self, fn: Callable[[AsyncStepContext, InputT], Awaitable[object]], /
    ) -> Job[InputT, ModelOutputT]: ...

    @overload
    def __call__(
        self, fn: Callable[[StepContext, InputT], object], /
    ) -> Job[InputT, ModelOutputT]: ...


@dataclass(frozen=True)
class TriggerItem(Generic[InputT]):
    """One item of :meth:`Job.batch_trigger` with its own options (those of :meth:`Job.trigger`).

    ``queue`` and ``priority`` left as None take the job's.
    """

    input: InputT
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    coalesce: str | None = None
    labels: Mapping[str, str] | None = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    priority: int | None = None
    queue: str | None = None


class Job(Generic[InputT, OutputT]):
    """A registered job. Made by ``@durably.job("name")``; trigger it to create runs.

    Its options (``retry``, ``queue``, ``priority``, ``timeout``,
    ``max_recoveries``) are those given to ``@durably.job``.
    """

    def __init__(
        self,
        durably: JobHost,
        name: str,
        fn: JobFunction[InputT, OutputT] | AsyncJobFunction[InputT, OutputT],
        *,
        max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
        retry: Retry | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        input_model: type | None = None,
        output_model: type | None = None,
        serializer: Serializer = DEFAULT_SERIALIZER,
    ) -> None:
        self.name = name
        self.fn = fn
        self.max_recoveries = max_recoveries
        """Recoveries after which a run of this job is failed as a poison run (None: never)."""
        self.retry = retry
        """How a failed run is retried (None: it fails at its first error)."""
        self.queue = queue
        """The queue its runs go to, unless a trigger names another."""
        self.priority = priority
        """Its runs' priority, unless a trigger gives another: higher runs first."""
        self.timeout = timeout
        """Seconds an attempt may run before it fails with ``RunTimeoutError`` (None: no limit)."""
        self.input_model = input_model
        """What its input is converted to and checked against (:mod:`durably.io_models`)."""
        self.output_model = output_model
        """What its output is converted to and checked against."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self._durably = durably
        self._serializer = serializer
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Job {self.name!r}>"

    def _request(
        self,
        input: Any,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
    ) -> EnqueueRequest:
        if self.input_model is not None:
            input = self._conform_input(input)
        if (
            idempotency_key is None
            and concurrency_key is None
            and coalesce is None
            and labels is None
            and delay is None
            and run_at is None
            and priority is None
            and queue is None
        ):  # most triggers: the job's queue and priority were checked when it was registered
            return plain_request(self.name, input, self.queue, self.priority, self._serializer)
        return build_request(
            self.name,
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
            priority=self.priority if priority is None else priority,
            queue=self.queue if queue is None else queue,
            serializer=self._serializer,
        )

    @blocking
    def trigger(
        self,
        input: InputT,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        connection: Connection | None = None,
    ) -> Run[OutputT]:
        """Create a run (or return the existing one the keys resolve to).

        ``delay`` (seconds or a ``timedelta``) or ``run_at`` (an aware
        ``datetime``) make the run wait, ``pending``, until then.
        ``priority`` and ``queue`` override the job's for this run. With
        ``connection``, the run is written on the caller's connection and
        transaction: it exists if and only if the caller commits.
        """
        request = self._request(
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
        )
        return self._durably.enqueue([request], connection)[0]

    async def trigger_async(
        self,
        input: InputT,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        connection: AsyncConnection | None = None,
    ) -> Run[OutputT]:
        """:meth:`trigger` without blocking the event loop.

        With ``connection`` (an ``AsyncConnection``: ``await session.connection()``
        for an ``AsyncSession``), the run is written in the caller's async
        transaction, on its own driver: it exists if and only if the caller commits.
        """
        request = self._request(
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
        )
        return (await self._durably.enqueue_async([request], connection))[0]

    @blocking
    def batch_trigger(
        self,
        items: Sequence[InputT | TriggerItem[InputT]],
        *,
        connection: Connection | None = None,
    ) -> list[Run[OutputT]]:
        """Trigger many runs in one transaction: all are created or none is.

        Every item is validated before anything is written. Wrap an input in
        :class:`TriggerItem` to give it options.
        """
        requests = self._batch_requests(items)
        if not requests:
            return []
        return self._durably.enqueue(requests, connection)

    async def batch_trigger_async(
        self,
        items: Sequence[InputT | TriggerItem[InputT]],
        *,
        connection: AsyncConnection | None = None,
    ) -> list[Run[OutputT]]:
        """:meth:`batch_trigger` without blocking the event loop (``connection`` as in
        :meth:`trigger_async`)."""
        requests = self._batch_requests(items)
        if not requests:
            return []
        return await self._durably.enqueue_async(requests, connection)

    def _conform_input(self, input: Any) -> Any:
        return conform(self.input_model, input, f"The input of job {self.name!r}")

    def _batch_requests(
        self, items: Sequence[InputT | TriggerItem[InputT]]
    ) -> list[EnqueueRequest]:
        requests = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, TriggerItem):
                    request = self._request(
                        item.input,
                        idempotency_key=item.idempotency_key,
                        concurrency_key=item.concurrency_key,
                        coalesce=item.coalesce,
                        labels=item.labels,
                        delay=item.delay,
                        run_at=item.run_at,
                        priority=item.priority,
                        queue=item.queue,
                    )
                else:
                    if self.input_model is not None:
                        item = self._conform_input(item)
                    request = plain_request(
                        self.name, item, self.queue, self.priority, self._serializer
                    )
            except ValidationError as exc:
                raise ValidationError(f"{exc} (at index {index})") from None
            requests.append(request)
        return requests

    @blocking
    def trigger_and_wait(
        self,
        input: InputT,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
    ) -> Run[OutputT]:
        """Trigger, then wait for the run to complete; returns the completed run.

        Raises :class:`~durably.RunFailedError` if it fails,
        :class:`~durably.CancelledError` if it is cancelled and ``TimeoutError``
        after ``timeout`` seconds.
        """
        run = self.trigger(
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
        )
        assert run.disposition is not None
        done = self._durably.wait_for_run(run.id, timeout=timeout)
        return done.with_disposition(run.disposition)

    async def trigger_and_wait_async(
        self,
        input: InputT,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
    ) -> Run[OutputT]:
        """:meth:`trigger_and_wait` for the event loop."""
        run = await self.trigger_async(
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
        )
        assert run.disposition is not None
        done = await self._durably.wait_for_run_async(run.id, timeout=timeout)
        return done.with_disposition(run.disposition)

    @blocking
    def get_run(self, run_id: str) -> Run[OutputT] | None:
        """The run, or None if it does not exist or belongs to another job."""
        run = self._durably.get_run(run_id)
        return run if run is not None and run.job_name == self.name else None

    @blocking
    def get_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run[OutputT]]:
        return self._durably.get_runs(
            status=status, job_name=self.name, labels=labels, limit=limit, offset=offset
        )

    async def get_run_async(self, run_id: str) -> Run[OutputT] | None:
        run = await self._durably.get_run_async(run_id)
        return run if run is not None and run.job_name == self.name else None

    async def get_runs_async(
        self,
        *,
        status: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run[OutputT]]:
        return await self._durably.get_runs_async(
            status=status, job_name=self.name, labels=labels, limit=limit, offset=offset
        )
