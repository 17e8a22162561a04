"""Fixtures of the crash suite: a cluster of worker processes, always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture
def make_cluster(
    tmp_path: Path, driver: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """Build a ``Cluster`` on a fresh database of the test's driver (on PostgreSQL, a new
    database of the session's server); every process is killed and every client closed at
    teardown, whatever happened."""
    made: list[Cluster] = []

    def factory(db_path: Path | None = None, **settings: str) -> Cluster:
        path = db_path or tmp_path / "db" / "durably.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        directory = tmp_path / f"cluster-{len(made)}"
        directory.mkdir()
        url = str(request.getfixturevalue("postgres_db")) if driver == "postgresql" else None
        cluster = Cluster(directory, driver, path, db_url=url, **settings)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()
