"""Fixtures of the conformance tests (tests/hrana/test_conformance_*.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hrana.conformance import EXPIRY_SECONDS, TOKEN
from tests.hrana.process import Server, start_server, stop_server


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A test server with an auth token and a 1 s stream expiry, on a fresh file."""
    srv = start_server(
        tmp_path_factory.mktemp("conformance"),
        "conformance",
        "--stream-expiry",
        str(EXPIRY_SECONDS),
        token=TOKEN,
    )
    try:
        yield srv
    finally:
        stop_server(srv.proc)
        assert srv.proc.returncode == 0, srv.trace_path.read_text()[-2000:]
