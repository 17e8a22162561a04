"""Values in and out of the database: the :class:`Serializer` a ``Durably`` stores them with.

Your values (job inputs and outputs, step results, signal payloads, wait
metadata, log data) go through the instance's serializer,
``Durably(url, serializer=...)``. The default, :class:`JSONSerializer`,
writes JSON text with the Python types of :mod:`durably.values` in typed
envelopes; a subclass adds types of its own (``encode``/``decode``), and any
object with ``dumps`` and ``loads`` replaces it. durably's own data (labels,
progress) is always this module's JSON.

Encoding is strict (no NaN, no silent ``str()`` of unknown objects) so that
what a job gets back on replay is exactly what was stored; failures become a
:class:`~durably.errors.ValidationError` naming what could not be stored.
"""

from __future__ import annotations

import json
from _json import make_encoder  # the C encoder json itself uses: CPython has it
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any, Protocol, runtime_checkable

from .errors import ValidationError
from .values import UndecodableValue, UnstorableValue, envelope, from_json_object, to_json

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
    """Encode ``value`` as durably's own JSON; ``what`` names it in the error (``"labels"``)."""
    return store(DEFAULT_SERIALIZER, value, what=what)


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


@runtime_checkable
class Serializer(Protocol):
    """How a ``Durably`` turns your values into text in the database, and back.

    ``dumps`` raises ``TypeError`` or ``ValueError`` for a value it does not
    store (durably reports it as a ``ValidationError`` naming the value);
    ``loads`` must give back a value equal to the one dumped, since a
    replayed step returns what ``loads`` makes of its stored result.
    """

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


class JSONSerializer:
    """The default serializer: JSON, with durably's typed envelopes (:mod:`durably.values`).

    Subclass it to store types of your own beside durably's, as
    ``json.JSONEncoder.default`` does for ``json``: ``encode`` is called for
    a value of a type durably does not know and returns its JSON data (an
    :meth:`envelope`, to be read back), ``decode`` is called with the kind
    and data of an envelope durably does not know.
    """

    envelope = staticmethod(envelope)

    def __init__(self) -> None:
        custom = type(self).encode is not JSONSerializer.encode
        self._other = self.encode if custom else None
        self._decoder = (
            json.JSONDecoder(object_hook=lambda data: from_json_object(data, self.decode))
            if type(self).decode is not JSONSerializer.decode
            else None
        )

    def encode(self, value: Any) -> Any:
        """JSON data for ``value``, whose type durably does not store; here: refused."""
        raise UnstorableValue(f"a {type(value).__name__} is not a value this serializer stores")

    def decode(self, kind: str, value: Any) -> Any:
        """The value of an envelope of ``kind`` durably does not know; here: refused."""
        raise UndecodableValue(f"a stored value of unknown kind {kind!r}")

    def dumps(self, value: Any) -> str:
        return "".join(_encode(to_json(value, self._other), 0))

    def loads(self, text: str) -> Any:
        if self._decoder is None:
            return loads(text)
        return self._decoder.decode(text)


DEFAULT_SERIALIZER: Serializer = JSONSerializer()


def check_serializer(serializer: object) -> Serializer:
    """``serializer`` if it is one (None: the default), else a ValidationError."""
    if serializer is None:
        return DEFAULT_SERIALIZER
    if not isinstance(serializer, Serializer):
        raise ValidationError(
            f"serializer must have dumps(value) -> str and loads(text), not {serializer!r}"
        )
    return serializer


def store(serializer: Serializer, value: Any, *, what: str) -> str:
    """``value`` as the text ``serializer`` stores; ``what`` names it in the error."""
    try:
        return serializer.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} cannot be stored: {exc}") from None
    except RecursionError:
        raise ValidationError(
            f"{what} cannot be stored: it contains itself, or is nested too deeply"
        ) from None


def load(serializer: Serializer, text: str | None) -> Any:
    """The value ``serializer`` stored as ``text`` (None for no value)."""
    return None if text is None else serializer.loads(text)


def load_or_text(serializer: Serializer, text: str | None) -> Any:
    """The stored value, or the raw text when it does not decode (shown, not trusted)."""
    try:
        return load(serializer, text)
    except ValueError:
        return text
