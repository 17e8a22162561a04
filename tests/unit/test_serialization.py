"""Stored JSON decodes as ``json.loads`` would, whoever wrote it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from durably import ValidationError, serialization


@pytest.mark.parametrize(
    "text",
    ['{"n":1}', '{"a": [1, {"b": null}], "c": "é"}', "[]", "0", '"x"', "null", "true", "-1.5e3"],
)
def test_durablys_own_json_decodes_as_json_loads_does(text: str) -> None:
    assert serialization.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", [' {"n": 1}', '{"n": 1}\n', "\t[1, 2] "])
def test_json_written_with_surrounding_whitespace_decodes(text: str) -> None:
    # Rows written by another tool (or by hand) may be pretty-printed.
    assert serialization.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"n": 1} x', "[1] [2]", "undefined"])
def test_text_that_is_not_one_json_value_raises_as_json_loads_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as raised:
        serialization.loads(text)
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    assert str(raised.value) == str(expected.value)


def test_text_that_is_not_json_is_shown_as_it_is() -> None:
    assert serialization.loads_or_text('{"n": 1} x') == '{"n": 1} x'
    assert serialization.loads_or_text(None) is None


def test_values_are_stored_as_compact_json_that_keeps_non_ascii_text() -> None:
    value = {"name": "Zoë", "tags": ["a", "b"], "n": 1.5, "none": None, "ok": True}
    text = serialization.dumps(value, what="The input")
    assert text == '{"name":"Zoë","tags":["a","b"],"n":1.5,"none":null,"ok":true}'
    assert serialization.loads(text) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "Out of range float values are not JSON compliant"),
        ({"when": object()}, "a object (builtins:object) is not a value durably stores"),
        ({"c": complex(1, 2)}, "a complex (builtins:complex) is not a value durably stores"),
    ],
)
def test_a_value_durably_cannot_store_is_a_validation_error(value: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=f"^The input cannot be stored: {re.escape(reason)}"):
        serialization.dumps(value, what="The input")


def test_a_value_that_contains_itself_is_a_validation_error() -> None:
    looped: list[Any] = [1]
    looped.append({"back": looped})
    with pytest.raises(ValidationError, match="it contains itself, or is nested too deeply"):
        serialization.dumps(looped, what="The input")
    # and the encoder is still usable afterwards
    assert serialization.dumps([1, {"a": 2}], what="The input") == '[1,{"a":2}]'
