"""Fixtures of the web tests: a durably app with test jobs, served over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durably import Durably, StepContext
from tests.web.servers import SERVERS

Serve = Callable[..., Any]


class Jobs:
    """The jobs every web test can trigger, and the gates the tests open."""

    def __init__(self, durably: Durably) -> None:
        self.gate = threading.Event()
        self.flaky_failures = 1

        @durably.job("greet")
        def greet(step: StepContext, input: Any) -> Any:
            name = step.run("name", lambda: input["name"])
            step.progress(1, 2, "named")
            step.log.info("greeting", {"name": name})
            return {"greeting": f"hello {name}"}

        @durably.job("gated")
        def gated(step: StepContext, input: Any) -> Any:
            step.run("before", lambda: 1)
            while not self.gate.is_set():
                if step.wait(0.02):
                    return None
            step.progress(2, 2, "through the gate")
            step.log.warn("the gate opened", {"gate": "main"})
            return step.run("after", lambda: "opened")

        @durably.job("count")
        def count(step: StepContext, input: Any) -> Any:
            for n in range(1, input["to"] + 1):
                step.progress(n, input["to"])
            return step.run("done", lambda: input["to"])

        @durably.job("flaky")
        def flaky(step: StepContext, input: Any) -> Any:
            step.run("first", lambda: "kept")
            return step.run("second", self._flaky_step)

    def _flaky_step(self) -> str:
        if self.flaky_failures > 0:
            self.flaky_failures -= 1
            raise RuntimeError("flaky step failed")
        return "recovered"


API_DATABASES = ["sqlite", "postgresql"]
"""The databases the HTTP API's own modules serve from (their ``driver`` fixture). The
browser and client modules read the same routes, so they stay on SQLite."""


@pytest.fixture(params=["sqlite"])
def driver(request: pytest.FixtureRequest) -> str:
    """The served app's database: a SQLite file, unless a module serves ``API_DATABASES``."""
    return str(request.param)


@pytest.fixture
def durably(db_url: str) -> Iterator[Durably]:
    instance = Durably(
        db_url,
        polling_interval=0.05,
        heartbeat_interval=0.2,
        stale_threshold=2.0,
        preserve_steps=True,
    )
    instance.migrate()
    yield instance
    instance.close()


@pytest.fixture
def jobs(durably: Durably) -> Iterator[Jobs]:
    registered = Jobs(durably)
    yield registered
    registered.gate.set()


@pytest.fixture(params=sorted(SERVERS))
def serve(request: pytest.FixtureRequest, durably: Durably, jobs: Jobs) -> Serve:
    """``serve(**options)``: a context manager giving the base URL of the mounted app."""
    server = SERVERS[str(request.param)]
    return lambda **options: server(durably, **options)


@pytest.fixture
def api(serve: Serve) -> Iterator[str]:
    """The base URL of an app that allows unauthenticated changes."""
    with serve(allow_unauthenticated=True) as url:
        yield url
