"""OpenTelemetry tracing (``durably.contrib.opentelemetry``) with the real SDK.

Spans are read from the SDK's in-memory exporter, or, for a worker in
another process, from the file that process's SDK exports them to.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from durably import AsyncStepContext, ConflictError, Durably, Retry, RunStatus, StepContext
from durably.contrib.opentelemetry import instrument, is_instrumented, uninstrument

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]


class Traces:
    """An SDK tracer provider exporting to memory, and a tracer for the test's own spans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span


@pytest.fixture
def traces() -> Iterator[Traces]:
    traces = Traces()
    yield traces
    traces.provider.shutdown()


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def _ship(durably: Durably, tracer: trace.Tracer, kind: str) -> Any:
    """A job of two steps whose functions and body make spans of their own."""

    def pack() -> str:
        with tracer.start_as_current_span("pack the box"):
            return "packed"

    def label() -> str:
        return "labelled"

    if kind == "def":

        @durably.job("ship")
        def ship(step: StepContext, input: Any) -> Any:
            with tracer.start_as_current_span("in the job"):
                pass
            return [step.run("pack", pack), step.run("label", label)]

        return ship

    async def weigh() -> str:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("weigh the box"):
            return "weighed"

    @durably.job("ship")
    async def ship_async(step: AsyncStepContext, input: Any) -> Any:
        with tracer.start_as_current_span("in the job"):
            await asyncio.sleep(0)
        return [
            await step.run("pack", pack),  # a def step: in a step thread
            await step.run("weigh", weigh),  # a coroutine: a task on the loop
            await step.run("label", lambda: asyncio.sleep(0.05, "labelled")),  # a coroutine
        ]

    return ship_async


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_run_attempt_and_its_steps_are_spans_in_the_triggers_trace(
    durably: Durably, traces: Traces, kind: str
) -> None:
    instrument(durably, traces.provider)
    assert is_instrumented(durably)
    ship = _ship(durably, traces.tracer, kind)
    with traces.tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        run = ship.trigger({"order": 1})
    assert durably.process_until_idle() == 1
    assert durably.get_run(run.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]

    trace_id, request_id = request.get_span_context().trace_id, request.get_span_context().span_id
    trigger = traces.one("durably.trigger ship")
    assert trigger.kind is SpanKind.PRODUCER
    assert (_ids(trigger)[0], _parent_id(trigger)) == (trace_id, request_id)
    assert dict(trigger.attributes or {}) == {"durably.job": "ship", "durably.queue": "default"}
    attempt = traces.one("durably.run ship")
    assert attempt.kind is SpanKind.CONSUMER
    assert (_ids(attempt)[0], _parent_id(attempt)) == (trace_id, _ids(trigger)[1])
    assert dict(attempt.attributes or {}) == {
        "durably.job": "ship",
        "durably.run_id": run.id,
        "durably.attempt": 1,
        "durably.queue": "default",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    _, attempt_id = _ids(attempt)
    assert _parent_id(traces.one("in the job")) == attempt_id

    names = ["pack", "label"] if kind == "def" else ["pack", "weigh", "label"]
    steps = [traces.one(f"durably.step {name}") for name in names]
    for index, (name, step) in enumerate(zip(names, steps, strict=True)):
        assert (_ids(step)[0], _parent_id(step)) == (trace_id, attempt_id)
        assert step.attributes is not None
        assert (step.attributes["durably.step"], step.attributes["durably.step.index"]) == (
            name,
            index,
        )
        assert step.attributes["durably.run_id"] == run.id
        assert step.status.status_code is StatusCode.UNSET
    assert _parent_id(traces.one("pack the box")) == _ids(steps[0])[1]
    if kind == "async def":
        assert _parent_id(traces.one("weigh the box")) == _ids(steps[1])[1]
        # a step that returns a coroutine lasts until the coroutine is awaited
        label_span = steps[2]
        assert label_span.end_time is not None
        assert label_span.start_time is not None
        assert label_span.end_time - label_span.start_time >= 50_000_000  # ns


def test_failed_attempts_are_errors_and_each_retry_is_a_span_of_its_own(
    durably: Durably, traces: Traces
) -> None:
    instrument(durably, traces.provider)
    calls: list[str] = []

    @durably.job("flaky", retry=Retry(max_attempts=2, initial_delay=0, jitter=False))
    def flaky(step: StepContext, input: Any) -> Any:
        step.run("fetch", lambda: calls.append("fetch"))

        def save() -> str:
            calls.append("save")
            if calls.count("save") == 1:
                raise ConnectionError("database went away")
            return "saved"

        return step.run("save", save)

    with traces.tracer.start_as_current_span("nightly import"):
        run = flaky.trigger(None)
    assert durably.process_until_idle() == 2
    assert durably.get_run(run.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
    assert calls == ["fetch", "save", "save"]

    first, second = sorted(traces.named("durably.run flaky"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {})["durably.attempt"] for s in (first, second)] == [1, 2]
    trace_id, trigger_id = _ids(traces.one("durably.trigger flaky"))
    for attempt in (first, second):  # both continue the trigger's trace
        assert (_ids(attempt)[0], _parent_id(attempt)) == (trace_id, trigger_id)
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ConnectionError: database went away"
    (event,) = [e for e in first.events if e.name == "exception"]
    assert (event.attributes or {})["exception.type"] == "ConnectionError"
    assert second.status.status_code is StatusCode.UNSET

    saves = sorted(traces.named("durably.step save"), key=lambda s: s.start_time or 0)
    assert [_parent_id(s) for s in saves] == [_ids(first)[1], _ids(second)[1]]
    assert saves[0].status.status_code is StatusCode.ERROR
    assert saves[1].status.status_code is StatusCode.UNSET
    # "fetch" ran in the first attempt only: the second replays it, without a span
    (fetch,) = traces.named("durably.step fetch")
    assert _parent_id(fetch) == _ids(first)[1]


def test_a_run_that_waits_ends_its_span_and_resumes_in_a_new_one(
    durably: Durably, traces: Traces
) -> None:
    instrument(durably, traces.provider)

    @durably.job("remind")
    def remind(step: StepContext, input: Any) -> Any:
        step.run("draft", lambda: "draft")
        step.sleep("a moment", 0.05)  # the run suspends: no worker holds it meanwhile
        return step.run("send", lambda: "sent")

    run = remind.trigger(None)
    deadline = time.monotonic() + 20
    while (found := durably.get_run(run.id)) is None or found.status is not RunStatus.COMPLETED:
        assert time.monotonic() < deadline, found
        durably.process_until_idle()
        time.sleep(0.02)

    first, second = sorted(traces.named("durably.run remind"), key=lambda s: s.start_time or 0)
    assert first.status.status_code is second.status.status_code is StatusCode.UNSET
    assert [(s.attributes or {})["durably.attempt"] for s in (first, second)] == [1, 1]
    trigger_id = _ids(traces.one("durably.trigger remind"))[1]
    assert _parent_id(first) == _parent_id(second) == trigger_id
    assert _parent_id(traces.one("durably.step draft")) == _ids(first)[1]  # not replayed
    assert _parent_id(traces.one("durably.step send")) == _ids(second)[1]


def test_every_way_to_trigger_is_a_span_whose_context_the_runs_continue(
    durably: Durably, traces: Traces
) -> None:
    instrument(durably, traces.provider)
    job = durably.job("echo")(lambda step, input: step.run("echo", lambda: input))

    async def trigger_async() -> None:
        with traces.tracer.start_as_current_span("async trigger"):
            await job.trigger_async(1)
            await job.batch_trigger_async([2, 3])

    with traces.tracer.start_as_current_span("sync trigger"):
        job.trigger(4, idempotency_key="four")  # a keyed insert
        job.batch_trigger([5, 6])
        with durably.engine.begin() as connection:  # the caller's transaction
            job.trigger(7, connection=connection)
    asyncio.run(trigger_async())
    job.trigger(8)  # no span current: the trigger's span starts a trace
    assert durably.process_until_idle() == 8

    spans = {_ids(span)[1]: span for span in traces.spans()}

    def ancestry(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None:
            span = spans[span.parent.span_id]
            names.append(span.name)
        return names

    by_input = {}
    for attempt in traces.named("durably.run echo"):
        run = durably.get_run(str((attempt.attributes or {})["durably.run_id"]))
        assert run is not None
        by_input[run.input] = attempt
        assert _ids(attempt)[0] == _ids(spans[_parent_id(attempt)])[0]  # type: ignore[index]
    for value in (1, 2, 3):
        assert ancestry(by_input[value]) == ["durably.trigger echo", "async trigger"]
    for value in (4, 5, 6, 7):
        assert ancestry(by_input[value]) == ["durably.trigger echo", "sync trigger"]
    assert ancestry(by_input[8]) == ["durably.trigger echo"]
    batches = [s for s in traces.named("durably.trigger echo") if "durably.runs" in s.attributes]  # type: ignore[operator]
    assert sorted(s.attributes["durably.runs"] for s in batches) == [2, 2]  # type: ignore[index]

    async def retrigger_async() -> str:  # the sync method, in one of durably's threads
        with traces.tracer.start_as_current_span("async retrigger"):
            return (await durably.retrigger_async(str(by_input[8].attributes["durably.run_id"]))).id  # type: ignore[index]

    again = asyncio.run(retrigger_async())
    assert durably.process_until_idle() == 1
    spans = {_ids(span)[1]: span for span in traces.spans()}
    (attempt,) = [
        s
        for s in traces.named("durably.run echo")
        if (s.attributes or {})["durably.run_id"] == again
    ]
    assert ancestry(attempt) == ["durably.trigger echo", "async retrigger"]


def test_a_trigger_that_fails_is_an_error_span(durably: Durably, traces: Traces) -> None:
    instrument(durably, traces.provider)
    job = durably.job("sync-user")(lambda step, input: None)
    job.trigger(1, concurrency_key="user-1")
    with pytest.raises(ConflictError):
        job.trigger(2, concurrency_key="user-1")
    first, second = sorted(
        traces.named("durably.trigger sync-user"), key=lambda s: s.start_time or 0
    )
    assert first.status.status_code is StatusCode.UNSET
    assert second.status.status_code is StatusCode.ERROR
    assert (second.status.description or "").startswith("ConflictError: A pending run already")


def test_uninstrumented_instances_store_and_trace_nothing(durably: Durably, traces: Traces) -> None:
    job = durably.job("echo")(lambda step, input: step.run("echo", lambda: input))
    with traces.tracer.start_as_current_span("before instrumenting"):
        job.trigger("before")  # nothing stored: the worker's span below is a root
    instrument(durably, traces.provider)
    assert durably.process_until_idle() == 1
    assert traces.one("durably.run echo").parent is None

    uninstrument(durably)
    assert not is_instrumented(durably)
    with traces.tracer.start_as_current_span("after uninstrumenting"):
        job.trigger("after")
    assert durably.process_until_idle() == 1
    assert len(traces.named("durably.run echo")) == 1
    assert len(traces.named("durably.step echo")) == 1
    assert traces.named("durably.trigger echo") == []


WORKER_APP = """
import json, os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from durably import Durably
from durably.contrib.opentelemetry import instrument

spans = open(os.environ["SPANS_FILE"], "a", encoding="utf-8")
provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(
        ConsoleSpanExporter(out=spans, formatter=lambda span: span.to_json(indent=None) + "\\n")
    )
)
durably = Durably(os.environ["DURABLY_DATABASE_URL"], polling_interval=0.05)
instrument(durably, provider)


@durably.job("invoice")
def invoice(step, input):
    return step.run("render", lambda: f"invoice {input}")
"""


def test_the_trace_crosses_into_a_worker_process(
    db_url: str, engine: str, tmp_path: Path, traces: Traces
) -> None:
    (tmp_path / "otel_worker_app.py").write_text(WORKER_APP, encoding="utf-8")
    spans_file = tmp_path / "spans.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")},
        "DURABLY_DATABASE_URL": db_url,
        "SPANS_FILE": str(spans_file),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    client = Durably(db_url)
    client.migrate()
    instrument(client, traces.provider)
    invoice = client.job("invoice")(lambda step, input: None)  # the worker runs it
    with traces.tracer.start_as_current_span("checkout") as checkout:
        run = invoice.trigger(42)

    worker = subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "otel_worker_app:durably", "--engine", engine],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while (found := client.get_run(run.id)) is None or found.status is not RunStatus.COMPLETED:
            assert time.monotonic() < deadline, "the worker process did not complete the run"
            assert worker.poll() is None, worker.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        client.close()
    assert worker.returncode == 0, stderr.decode()

    exported = _spans_in(spans_file.read_text(encoding="utf-8").splitlines())
    attempt, step = exported["durably.run invoice"], exported["durably.step render"]
    trigger = traces.one("durably.trigger invoice")  # in this process
    assert _parent_id(trigger) == checkout.get_span_context().span_id
    trace_id, trigger_id = _ids(trigger)
    assert attempt["context"]["trace_id"] == f"0x{trace_id:032x}"
    assert attempt["parent_id"] == f"0x{trigger_id:016x}"
    assert attempt["attributes"]["durably.run_id"] == run.id
    assert step["context"]["trace_id"] == attempt["context"]["trace_id"]
    assert step["parent_id"] == attempt["context"]["span_id"]


def _spans_in(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    spans: dict[str, dict[str, Any]] = {}
    for line in lines:
        span = json.loads(line)
        assert span["name"] not in spans, span["name"]
        spans[span["name"]] = span
    return spans
