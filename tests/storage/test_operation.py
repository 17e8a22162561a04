"""An operation is written once and behaves the same run in a thread or from an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durably import Durably, testing
from durably.clock import now_ms
from durably.core import enqueue as runs
from durably.core.operation import Operation, Read, Transaction, Write, run, run_async, together
from durably.jobs import build_request


class Refused(Exception):
    pass


def _refuse(_conn: Any) -> None:
    raise Refused("no")


def _add(_conn: Any, a: int, b: int) -> int:
    return a + b


def _insert_run(n: int) -> Write:
    return Write(runs.new_runs([build_request("w", {"n": n})], now_ms())[1])


def _operation(log: list[str]) -> Operation[tuple[Any, ...]]:
    """Every kind of request, an error thrown in and caught, and a result returned."""
    try:
        yield Read(_refuse)
    except Refused as exc:
        log.append(f"caught {exc}")
    answer = yield Read(_add, (40, 2))
    log.append(f"in a transaction: {(yield Transaction(_add, (1, 1)))}")
    (inserted,) = yield _insert_run(1)
    try:
        yield _insert_run(2)
        log.append("inserted 2")
    finally:
        log.append("cleaned up")
    return answer, inserted.rowcount


def _uncaught(log: list[str]) -> Operation[None]:
    try:
        yield Read(_refuse)
    finally:
        log.append("cleaned up")


def _drive(durably: Durably, how: str, operation: Operation[Any]) -> Any:
    if how == "thread":
        return run(operation, testing.database(durably))

    async def main() -> Any:
        return await run_async(operation, testing.async_database(durably))

    return asyncio.run(main())


@pytest.mark.parametrize("how", ["thread", "loop"])
def test_an_operation_gets_replies_and_errors_where_it_asked(durably: Durably, how: str) -> None:
    durably.job("w")(lambda step, input: None)
    log: list[str] = []

    assert _drive(durably, how, _operation(log)) == (42, 1)
    assert log == ["caught no", "in a transaction: 2", "inserted 2", "cleaned up"]
    assert sorted(r.input["n"] for r in durably.get_runs(job_name="w")) == [1, 2]


@pytest.mark.parametrize("how", ["thread", "loop"])
def test_an_error_the_operation_does_not_catch_reaches_the_caller(
    durably: Durably, how: str
) -> None:
    log: list[str] = []
    with pytest.raises(Refused):
        _drive(durably, how, _uncaught(log))
    assert log == ["cleaned up"]


def _insert_keyed(key: str) -> Operation[int]:
    """Insert a run with an idempotency key; how many rows that inserted."""
    _row, batch = runs.keyed_run(build_request("w", {"key": key}, idempotency_key=key), now_ms())
    (outcome, *_labels) = yield Write(batch)
    return int(outcome.rowcount)


def _failing_write(log: list[str]) -> Operation[str]:
    try:
        yield Write([(runs._INSERT_RUN, {"id": None})])  # an incomplete row: refused
    except Exception:
        log.append("refused")
    return "went on"


@pytest.mark.parametrize("how", ["thread", "loop"])
def test_together_each_operation_gets_its_own_outcome_or_error(durably: Durably, how: str) -> None:
    durably.job("w")(lambda step, input: None)
    log: list[str] = []

    result = _drive(durably, how, together(_failing_write(log), _insert_keyed("k1")))

    assert result == ("went on", 1)
    assert log == ["refused"]
    assert [r.idempotency_key for r in durably.get_runs(job_name="w")] == ["k1"]
