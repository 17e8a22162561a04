"""The durably side of the bench: database targets, the benchmark job, its configuration.

The same :func:`build` makes the app in the bench process and in worker
processes (:mod:`bench.worker`), so every workload runs identical job code.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from durably import Durably, StepContext

DRIVERS = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
"""durably's two file drivers; both write an ordinary SQLite file."""
SERVER_DRIVERS = ("postgresql",)
"""Drivers whose database is on a server the bench starts (bench/postgres.py)."""

JOB = "bench-three-steps"
STEPS = ("a", "b", "c")


@dataclass(frozen=True)
class Target:
    """One fresh database and the driver durably reaches it with.

    A file at ``path`` for the file drivers; for a server driver, the
    database of ``server_url`` (``path`` is then unused).
    """

    driver: str
    path: Path
    server_url: str | None = None

    @property
    def url(self) -> str:
        return self.server_url or DRIVERS[self.driver].format(path=self.path)


@dataclass(frozen=True)
class AppConfig:
    """Everything a worker process needs to build the same app as the bench process.

    ``None`` keeps durably's default, so the bench measures the defaults a
    user gets unless a workload says otherwise. ``sleep_step`` makes that step
    sleep (W4: the victim process is killed while its runs sleep in it).
    """

    url: str
    max_concurrent_runs: int = 4
    synchronous: str = "NORMAL"
    polling_interval: float | None = None
    heartbeat_interval: float | None = None
    stale_threshold: float | None = None
    sleep_step: str | None = None
    sleep_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def durably_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_concurrent_runs": self.max_concurrent_runs,
            "synchronous": self.synchronous,
        }
        for name in ("polling_interval", "heartbeat_interval", "stale_threshold"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options


def _step_output(n: int, name: str) -> dict[str, Any]:
    """The "work" of a step: a small dict, as the issue asks (the cost is durably's, not ours)."""
    return {"n": n, "step": name}


def build(config: AppConfig) -> Durably:
    """A ``Durably`` with the benchmark job (three durable steps, each returning a small dict)."""
    durably = Durably(config.url, **config.durably_options())
    sleep_step, seconds = config.sleep_step, config.sleep_seconds

    def step_fn(n: int, name: str) -> dict[str, Any]:
        if name == sleep_step:
            time.sleep(seconds)
        return _step_output(n, name)

    @durably.job(JOB)
    def three_steps(step: StepContext, input: dict[str, int]) -> dict[str, bool]:
        n = input["n"]
        for name in STEPS:
            step.run(name, lambda name=name: step_fn(n, name))  # type: ignore[misc]
        return {"ok": True}

    return durably


def build_async(config: AppConfig) -> Durably:
    """The same job as an ``async def`` (for the asyncio engine, once durably has one)."""
    durably = Durably(config.url, **config.durably_options())

    @durably.job(JOB)
    async def three_steps(step: Any, input: dict[str, int]) -> dict[str, bool]:
        n = input["n"]
        for name in STEPS:
            await step.run(name, lambda name=name: _step_output(n, name))
        return {"ok": True}

    return durably


def inputs(count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(count)]
