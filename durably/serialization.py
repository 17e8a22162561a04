"""JSON in and out of the database.

Inputs, outputs, labels and progress are stored as JSON text, with the
Python types of :mod:`durably.values` in typed envelopes. Encoding is strict
(no NaN, no silent ``str()`` of unknown objects) so that what a job gets
back on replay is exactly what was stored; failures become a
:class:`~durably.errors.ValidationError` naming what could not be stored.
"""

from __future__ import annotations

import json
from _json import make_encoder  # the C encoder json itself uses: CPython has it
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from .errors import ValidationError
from .values import from_json_object, to_json

_encode = make_encoder(
    None,  # markers: no cycle detection (see below)
    json.JSONEncoder().default,  # an unknown type: TypeError
    encode_basestring,  # text as it is (ensure_ascii=False)
    None,  # indent: none
    ":",  # key separator: compact
    ",",  # item separator: compact
    False,  # sort_keys
    False,  # skipkeys
    False,  # allow_nan: NaN and infinities are refused
)
"""The C encoder ``json.dumps`` uses, made once, compact and strict.

``JSONEncoder.encode`` makes one per call, with a dict of the containers
it is inside to detect a cycle, which costs more than encoding a small
value. Without that dict a value that contains itself exhausts the
recursion limit instead, which :func:`dumps` reports as such.
"""
_decoder = json.JSONDecoder(object_hook=from_json_object)
# The decoder's scanner: set by JSONDecoder.__init__, not declared by typeshed.
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def dumps(value: Any, *, what: str) -> str:
    """Encode ``value``; ``what`` names it in the error (e.g. ``"The job input"``)."""
    try:
        return "".join(_encode(to_json(value), 0))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} cannot be stored: {exc}") from None
    except RecursionError:
        raise ValidationError(
            f"{what} cannot be stored: it contains itself, or is nested too deeply"
        ) from None


def loads(text: str | None) -> Any:
    """Decode stored JSON, envelopes into their values (``values.from_json_object``).

    durably's own JSON has no surrounding whitespace, so it goes straight to
    the decoder's C scanner (``json.loads`` matches whitespace around it in
    Python first, which costs more than decoding a small dict). Any other
    text takes ``JSONDecoder.decode``, which also words the error.
    """
    if text is None:
        return None
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _decoder.decode(text)
    return value if end == len(text) else _decoder.decode(text)


def loads_or_text(text: str | None) -> Any:
    """Stored JSON, or the raw text when it does not decode (shown, not trusted)."""
    try:
        return loads(text)
    except ValueError:
        return text
