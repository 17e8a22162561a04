"""``Durably(serializer=...)``: your values stored your way, replayed exactly.

A ``JSONSerializer`` subclass adds a type of its own beside durably's; a
serializer written from scratch (here: Python literals) replaces JSON
altogether. Both must give a replayed step what it returned, on both
engines, and both must refuse what they cannot store with a
``ValidationError`` that names it, storing nothing.
"""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from durably import Durably, JSONSerializer, Retry, RunStatus, StepContext, ValidationError


class WithFractions(JSONSerializer):
    def encode(self, value: Any) -> Any:
        if isinstance(value, Fraction):
            return self.envelope("fraction", [value.numerator, value.denominator])
        return super().encode(value)

    def decode(self, kind: str, value: Any) -> Any:
        if kind == "fraction":
            return Fraction(*value)
        return super().decode(kind, value)


class Literals:
    """Python literals as text: not JSON at all."""

    def dumps(self, value: Any) -> str:
        text = repr(value)
        try:
            if ast.literal_eval(text) == value:
                return text
        except (SyntaxError, ValueError):
            pass
        raise TypeError(f"{text} is not a Python literal")

    def loads(self, text: str) -> Any:
        try:
            return ast.literal_eval(text)
        except SyntaxError as exc:
            raise ValueError(str(exc)) from None


def _stored(db_path: Path, sql: str) -> list[Any]:
    with sqlite3.connect(db_path) as conn:
        return [row[0] for row in conn.execute(sql)]


@pytest.mark.both_engines
def test_a_type_of_your_own_replays_as_itself(make_durably: Callable[..., Durably]) -> None:
    durably = make_durably(serializer=WithFractions())
    seen: list[Any] = []

    @durably.job("share", retry=Retry(max_attempts=2, initial_delay=0, jitter=False))
    def share(step: StepContext, parts: int) -> Any:
        split = step.run("split", lambda: (Fraction(1, parts), {Fraction(2, parts)}))
        seen.append(split)
        if len(seen) == 1:
            raise RuntimeError("after the step: the retry replays it")
        return {"split": split}

    run = share.trigger(3)
    durably.process_until_idle()

    done = durably.get_run(run.id)
    assert done is not None
    assert done.status is RunStatus.COMPLETED
    assert seen == [(Fraction(1, 3), {Fraction(2, 3)})] * 2
    assert done.output == {"split": (Fraction(1, 3), {Fraction(2, 3)})}


def test_stored_text_is_readable_json(db_path: Path) -> None:
    durably = Durably(f"sqlite:///{db_path}", serializer=WithFractions())
    durably.migrate()

    @durably.job("half")
    def half(step: StepContext, value: Fraction) -> Fraction:
        return value / 2

    run = half.trigger(Fraction(3, 4))
    durably.process_until_idle()
    durably.close()
    assert _stored(db_path, "SELECT input FROM durably_runs") == [
        '{"$type":"fraction","value":[3,4]}'
    ]
    assert Durably(f"sqlite:///{db_path}", serializer=WithFractions()).get_run(
        run.id
    ).output == Fraction(3, 8)  # type: ignore[union-attr]


def test_a_value_the_serializer_refuses_is_a_validation_error_and_stores_nothing(
    make_durably: Callable[..., Durably],
) -> None:
    fractions = make_durably(serializer=WithFractions())

    @fractions.job("f")
    def f(step: StepContext, value: Any) -> Any:
        return value

    with pytest.raises(ValidationError, match="The job input cannot be stored: a object"):
        f.trigger(object())
    assert fractions.get_runs() == []


@pytest.mark.both_engines
def test_a_serializer_written_from_scratch_stores_everything(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(serializer=Literals(), preserve_steps=True)

    @durably.job("approve")
    def approve(step: StepContext, request: dict[str, Any]) -> Any:
        items = step.run("items", lambda: (1, 2, 3))
        step.log.info("items", {"count": len(items), "ids": set(items)})
        wait = step.prepare_wait("approval", metadata={"from": request["from"]})
        result = step.wait_for(wait)
        return (items, result.payload)

    run = approve.trigger({"from": "ana", 1: b"raw"})
    durably.process_until_idle()
    (wait,) = durably.get_waits(run.id)
    assert wait.metadata == {"from": "ana"}
    assert durably.signal(wait.id, {"ok": True, "by": ("bo",)}, signal_id="s1") == "accepted"
    assert durably.signal(wait.id, {"ok": True, "by": ("bo",)}, signal_id="s1") == "duplicate"
    durably.process_until_idle()

    done = durably.get_run(run.id)
    assert done is not None
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.input == {"from": "ana", 1: b"raw"}
    assert done.output == ((1, 2, 3), {"ok": True, "by": ("bo",)})
    entries = [e for e in durably.get_logs(run.id) if e.message == "items"]
    assert entries  # once per time the job ran: before its wait, and after it
    assert all(entry.data == {"count": 3, "ids": {1, 2, 3}} for entry in entries)

    with pytest.raises(ValidationError, match="A signal's payload cannot be stored"):
        durably.signal(wait.id, {"not": object()})


def test_something_that_is_not_a_serializer_is_refused() -> None:
    with pytest.raises(ValidationError, match="serializer must have dumps"):
        Durably("sqlite:///never.db", serializer=json_module_is_not_one)  # type: ignore[arg-type]


json_module_is_not_one = object()


def test_the_http_api_shows_a_type_of_its_own_as_its_repr(db_path: Path) -> None:
    from tests.web.http_client import call
    from tests.web.servers import serve_wsgi

    durably = Durably(f"sqlite:///{db_path}", serializer=WithFractions())
    durably.migrate()

    @durably.job("third")
    def third(step: StepContext, n: int) -> Any:
        return {"share": Fraction(n, 3), "of": {n}}

    run = third.trigger(2)
    durably.process_until_idle()
    with serve_wsgi(durably) as api:
        reply = call("GET", f"{api}/run?runId={run.id}")
    durably.close()
    assert reply.status == 200, reply.body
    assert reply.json()["output"] == {
        "share": "Fraction(2, 3)",
        "of": {"$type": "set", "value": [2]},
    }
