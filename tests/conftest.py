"""Shared fixtures: every behavioural test runs on a real SQLite file and a real libSQL file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import Durably

DRIVERS = {
    "sqlite": "sqlite:///{path}",
    "libsql": "sqlite+libsql:///{path}",
}

FAST = {
    "polling_interval": 0.02,
    "heartbeat_interval": 0.1,
    "stale_threshold": 1.0,
}
"""Worker settings that keep tests quick; tests override what they need."""


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "durably.db"


@pytest.fixture
def db_url(driver: str, db_path: Path) -> str:
    return DRIVERS[driver].format(path=db_path)


@pytest.fixture
def make_durably(db_url: str) -> Iterator[Callable[..., Durably]]:
    """Build migrated ``Durably`` instances on the test's database; all closed at teardown."""
    made: list[Durably] = []

    def factory(**options: Any) -> Durably:
        settings = {**FAST, **options}
        instance = Durably(db_url, **settings)
        instance.migrate()
        made.append(instance)
        return instance

    yield factory
    for instance in reversed(made):
        instance.close()


@pytest.fixture
def durably(make_durably: Callable[..., Durably]) -> Durably:
    return make_durably()
