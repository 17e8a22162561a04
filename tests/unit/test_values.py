"""Values come back from storage as they went in: the types of ``durably.values``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from durably import serialization


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: tuple[str, ...] = ()


class Order(pydantic.BaseModel):
    id: uuid.UUID
    total: Decimal
    placed_at: dt.datetime


ORDER = Order(id=uuid.UUID(int=7), total=Decimal("12.30"), placed_at=dt.datetime(2026, 1, 2))
VALUES: list[Any] = [
    (1, "a", None),
    ((1, 2), (3, (4,))),
    {1, 2, 3},
    frozenset({"a"}),
    dt.datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=dt.timezone.utc),
    dt.datetime(2026, 12, 6, 10, 0),  # naive stays naive
    dt.date(2026, 12, 6),
    dt.time(23, 59, 1),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("0.10"),
    b"\x00\xffbytes",
    {1: "one", (1, 2): "pair", None: "none"},
    {"$type": "a user's own key", "value": 1},
    Color.BLUE,
    Level.LOW,
    Point(1, 2, ("a", "b")),
    ORDER,
    {"nested": [Point(0, 0), {"when": dt.date(2000, 1, 1)}, (Color.RED,)]},
    {"plain": [1, 2.5, "x", True, None, {"k": []}]},
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_comes_back_equal_and_of_the_same_type(value: Any) -> None:
    stored = serialization.dumps(value, what="The output")
    back = serialization.loads(stored)
    assert back == value
    assert type(back) is type(value)
    json.loads(stored)  # still JSON, readable in the database


def test_types_inside_containers_come_back_too() -> None:
    back = serialization.loads(serialization.dumps({"p": [(1, 2)]}, what="x"))
    assert type(back["p"][0]) is tuple


def test_plain_json_is_stored_as_it_is() -> None:
    assert serialization.dumps({"a": [1, "b"]}, what="x") == '{"a":[1,"b"]}'
    assert serialization.dumps((1, 2), what="x") == '{"$type":"tuple","value":[1,2]}'


def test_a_stored_value_whose_class_is_gone_cannot_be_decoded() -> None:
    text = '{"$type":"enum","class":"no_such_module:Gone","value":1}'
    with pytest.raises(
        ValueError, match="no_such_module:Gone of a stored value cannot be imported"
    ):
        serialization.loads(text)
    assert serialization.loads_or_text(text) == text  # shown as it is, not trusted
