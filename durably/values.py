"""The Python values durably stores, and how each comes back exactly as it went in.

A step's result is replayed from storage: a job that got a ``tuple`` the
first time must get a ``tuple`` after a crash, or it behaves differently on
replay. Plain JSON values (``str``, ``int``, finite ``float``, ``bool``,
``None``, lists, dicts with ``str`` keys) are stored as they are. The other
types durably knows are stored as a small typed envelope, readable in the
database::

    {"$type": "datetime", "value": "2026-12-06T10:00:00+00:00"}

Tuples, sets, frozensets, ``datetime``, ``date``, ``time``, ``timedelta``,
``UUID``, ``Decimal``, ``bytes`` (base64), dicts whose keys are not all
strings (or that hold a ``"$type"`` key of their own), ``Enum`` members,
dataclass instances and pydantic models. An enum, dataclass or model is
stored with the import path of its class, which must still be importable
when the value is read. Anything else is refused where it is stored, with a
:class:`~durably.errors.ValidationError` naming its type.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import importlib
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

TYPE_KEY = "$type"
"""The key that marks an envelope; a user's dict holding it is itself enveloped."""


class UnstorableValue(TypeError):
    """A value of a type durably does not store (reported as a ``ValidationError``)."""


class UndecodableValue(ValueError):
    """An envelope that cannot be turned back into its value (its class is gone, say)."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError):
        raise UndecodableValue(f"the class {path} of a stored value cannot be imported") from None
    if not isinstance(found, type):
        raise UndecodableValue(f"{path} of a stored value is not a class")
    return found


def _is_pydantic_model(value: Any) -> bool:
    # Looked up by name, so that pydantic is never imported by durably itself.
    return any(
        cls.__name__ == "BaseModel" and cls.__module__.startswith("pydantic")
        for cls in type(value).__mro__
    )


def envelope(kind: str, value: Any) -> dict[str, Any]:
    """``value`` (JSON data) marked as a ``kind``: how a serializer of its own stores its types."""
    return {TYPE_KEY: kind, "value": value}


def _envelope(kind: str, value: Any, cls: type | None = None) -> dict[str, Any]:
    if cls is None:
        return {TYPE_KEY: kind, "value": value}
    return {TYPE_KEY: kind, "class": _class_path(cls), "value": value}


Encoder = Callable[[Any], Any]
"""A fallback for values of other types: their JSON data (typically an envelope), or raise."""
Decoder = Callable[[str, Any], Any]
"""A fallback for envelopes of other kinds: ``(kind, value)`` to the value, or raise."""


def _dict(value: dict[Any, Any], other: Encoder | None) -> Any:
    if TYPE_KEY not in value and all(type(key) is str for key in value):
        return {key: to_json(item, other) for key, item in value.items()}
    # Pairs, not a dict: nothing inside can be taken for an envelope.
    return _envelope("dict", [[to_json(k, other), to_json(v, other)] for k, v in value.items()])


_SIMPLE: dict[type, Callable[[Any, Encoder | None], Any]] = {
    tuple: lambda v, o: _envelope("tuple", [to_json(item, o) for item in v]),
    set: lambda v, o: _envelope("set", [to_json(item, o) for item in v]),
    frozenset: lambda v, o: _envelope("frozenset", [to_json(item, o) for item in v]),
    dt.datetime: lambda v, o: _envelope("datetime", v.isoformat()),
    dt.date: lambda v, o: _envelope("date", v.isoformat()),
    dt.time: lambda v, o: _envelope("time", v.isoformat()),
    dt.timedelta: lambda v, o: _envelope("timedelta", [v.days, v.seconds, v.microseconds]),
    uuid.UUID: lambda v, o: _envelope("uuid", str(v)),
    Decimal: lambda v, o: _envelope("decimal", str(v)),
    bytes: lambda v, o: _envelope("bytes", base64.b64encode(v).decode("ascii")),
}
"""Types stored by their exact type (a subclass is not the same value on replay)."""


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_dict(value: dict[Any, Any]) -> bool:
    """Whether ``value`` is a flat dict of scalars under ``str`` keys, the usual input or result."""
    if TYPE_KEY in value:
        return False
    for key, item in value.items():
        if type(key) is not str or type(item) not in _SCALARS:
            return False
    return True


def to_json(value: Any, other: Encoder | None = None) -> Any:
    """``value`` as plain JSON data: itself when it is plain, envelopes where it is not.

    ``other`` encodes values of types durably does not know (a serializer's
    own types); without it they are refused. A flat dict or list of scalars
    is checked, not copied: the check is most of what a small input or step
    result costs to encode.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return value if _plain_dict(value) else _dict(value, other)
    if kind is list:
        if all(type(item) in _SCALARS for item in value):
            return value
        return [to_json(item, other) for item in value]
    encode = _SIMPLE.get(kind)
    if encode is not None:
        return encode(value, other)
    if isinstance(value, enum.Enum):
        return _envelope("enum", to_json(value.value, other), kind)
    if dataclasses.is_dataclass(value):
        fields = {f.name: to_json(getattr(value, f.name), other) for f in dataclasses.fields(value)}
        return _envelope("dataclass", fields, kind)
    if _is_pydantic_model(value):
        return _envelope("pydantic", value.model_dump_json(), kind)
    if other is not None:
        return other(value)
    raise UnstorableValue(
        f"a {kind.__name__} ({_class_path(kind)}) is not a value durably stores: use JSON "
        "values, tuples, sets, datetime, date, time, timedelta, UUID, Decimal, bytes, "
        "enums, dataclasses or pydantic models"
    )


def _dataclass(cls: type, fields: dict[str, Any]) -> Any:
    if not dataclasses.is_dataclass(cls):
        raise UndecodableValue(f"{_class_path(cls)} of a stored value is not a dataclass")
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    instance = cls(**{name: v for name, v in fields.items() if name in init})
    for name, v in fields.items():
        if name not in init:
            object.__setattr__(instance, name, v)
    return instance


def _enum(cls: type, value: Any) -> Any:
    if not issubclass(cls, enum.Enum):
        raise UndecodableValue(f"{_class_path(cls)} of a stored value is not an Enum")
    return cls(value)


def _pydantic(cls: type, text: str) -> Any:
    validate = getattr(cls, "model_validate_json", None)
    if validate is None:
        raise UndecodableValue(f"{_class_path(cls)} of a stored value is not a pydantic model")
    return validate(text)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "dict": dict,  # from [key, value] pairs, whose keys are values again already
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda parts: dt.timedelta(*parts),
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "bytes": base64.b64decode,
}
_CLASS_DECODERS: dict[str, Callable[[type, Any], Any]] = {
    "enum": _enum,
    "dataclass": _dataclass,
    "pydantic": _pydantic,
}


def from_json_object(data: dict[str, Any], other: Decoder | None = None) -> Any:
    """The JSON decoder's ``object_hook``: an envelope becomes its value, any other dict stays.

    Called innermost first, so an envelope's contents are already values.
    ``other`` decodes envelopes of kinds durably does not know.
    """
    kind = data.get(TYPE_KEY)
    if kind is None or "value" not in data:
        return data
    try:
        if "class" in data:
            return _CLASS_DECODERS[kind](_import_class(data["class"]), data["value"])
        decode = _DECODERS.get(kind)
        if decode is None:
            if other is None:
                raise UndecodableValue(f"a stored value of unknown kind {kind!r}")
            return other(kind, data["value"])
        return decode(data["value"])
    except UndecodableValue:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UndecodableValue(f"a stored {kind!r} value cannot be decoded: {exc}") from None
