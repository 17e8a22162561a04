"""Tracing a run from the request that triggered it to its steps, with OpenTelemetry.

Run it with `python examples/opentelemetry_tracing.py` (it needs
`pip install 'durably[otel]' opentelemetry-sdk`). A web request, stood in for
by a span, triggers a signup job; a worker runs it. The trace it prints, one
JSON span per line as the SDK's console exporter writes it, goes from the
request's span to the trigger's, then the run's, then each step's and the
span the job's code makes. In a real deployment the exporter is OTLP to a
collector, and the trigger and the worker are different processes: the
trace context travels with the run in the database.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from durably import Durably, StepContext
from durably.contrib.opentelemetry import instrument

DATABASE_URL = os.environ.get("DURABLY_DATABASE_URL", "sqlite:///durably-tracing-demo.db")

provider = TracerProvider(resource=Resource.create({"service.name": "signup-demo"}))
provider.add_span_processor(
    SimpleSpanProcessor(
        ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    )
)
tracer = provider.get_tracer("signup-demo")

durably = Durably(DATABASE_URL)
instrument(durably, tracer_provider=provider)


@durably.job("signup")
def signup(step: StepContext, input: dict[str, Any]) -> dict[str, Any]:
    account = step.run("create-account", lambda: {"id": 7, "email": input["email"]})

    def send_welcome() -> str:
        with tracer.start_as_current_span("smtp send"):  # a child of the step's span
            return f"welcome sent to {account['email']}"

    return {"account": account["id"], "mail": step.run("send-welcome", send_welcome)}


def main() -> int:
    durably.migrate()
    with tracer.start_as_current_span("POST /signup", kind=trace.SpanKind.SERVER):
        run = signup.trigger({"email": "ada@example.com"})  # stores this span's context
    durably.process_until_idle()  # a worker, usually `durably worker` in another process
    done = durably.get_run(run.id)
    assert done is not None
    print(f"run {run.id}: {done.status.value} {done.output}", file=sys.stderr)
    durably.close()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
