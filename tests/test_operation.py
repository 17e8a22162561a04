"""An operation is written once and behaves the same run in a thread or from an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durably import Durably, runs
from durably.clock import now_ms
from durably.jobs import build_request
from durably.operation import Call, Operation, Write, run, run_async


class Refused(Exception):
    pass


def _refuse() -> None:
    raise Refused("no")


def _insert_run(n: int) -> Write:
    return Write(runs.new_runs([build_request("w", {"n": n})], now_ms())[1])


def _operation(log: list[str]) -> Operation[tuple[Any, ...]]:
    """Every kind of request, an error thrown in and caught, and a result returned."""
    try:
        yield Call(_refuse)
    except Refused as exc:
        log.append(f"caught {exc}")
    answer = yield Call(lambda a, b: a + b, (40, 2))
    (inserted,) = yield _insert_run(1)
    try:
        yield _insert_run(2)
        log.append("inserted 2")
    finally:
        log.append("cleaned up")
    return answer, inserted.rowcount


def _uncaught(log: list[str]) -> Operation[None]:
    try:
        yield Call(_refuse)
    finally:
        log.append("cleaned up")


def _drive(durably: Durably, how: str, operation: Operation[Any]) -> Any:
    if how == "thread":
        return run(operation, durably._runtime.db)
    return asyncio.run(run_async(operation, durably._runtime))


@pytest.mark.parametrize("how", ["thread", "loop"])
def test_an_operation_gets_replies_and_errors_where_it_asked(durably: Durably, how: str) -> None:
    durably.job("w")(lambda step, input: None)
    log: list[str] = []

    assert _drive(durably, how, _operation(log)) == (42, 1)
    assert log == ["caught no", "inserted 2", "cleaned up"]
    assert sorted(r.input["n"] for r in durably.get_runs(job_name="w")) == [1, 2]


@pytest.mark.parametrize("how", ["thread", "loop"])
def test_an_error_the_operation_does_not_catch_reaches_the_caller(
    durably: Durably, how: str
) -> None:
    log: list[str] = []
    with pytest.raises(Refused):
        _drive(durably, how, _uncaught(log))
    assert log == ["cleaned up"]
