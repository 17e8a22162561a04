"""Stored JSON decodes as ``json.loads`` would, whoever wrote it."""

from __future__ import annotations

import json

import pytest

from durably import serialization


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
