"""Job input and output models: ``@durably.job(name, input=Model, output=Model)``.

A model is a pydantic model class or a dataclass. It is checked where a value
enters or leaves a run, so that a bad input is refused by ``trigger`` (the
caller sees the mistake, nothing is stored) and a bad output fails the run
(it is not stored as the run's result):

- ``trigger`` takes an instance of the model, or data the model accepts (a
  dict of its fields); the run stores the instance, which comes back as one
  (:mod:`durably.values`);
- the job is called with an instance, also for runs stored before the model
  was declared (their input is converted when the run starts);
- the job's return value is converted to the output model the same way.

pydantic is never imported here: a class with ``model_validate`` is taken to
be a pydantic model, so durably needs pydantic only when its user does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError


def check_model(model: Any, what: str) -> type | None:
    """``model`` if it can be one (a pydantic model class or a dataclass), else a ValidationError."""
    if model is None:
        return None
    if isinstance(model, type) and (
        callable(getattr(model, "model_validate", None)) or dataclasses.is_dataclass(model)
    ):
        return model
    raise ValidationError(f"{what} must be a pydantic model class or a dataclass, not {model!r}")


def conform(model: type | None, value: Any, what: str) -> Any:
    """``value`` as an instance of ``model`` (itself when it is one); a ValidationError if it
    cannot be, naming ``what`` (e.g. ``"The input of job 'bill'"``)."""
    if model is None or isinstance(value, model):
        return value
    validate = getattr(model, "model_validate", None)
    if validate is not None:
        try:
            return validate(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValidationError(f"{what} does not fit {model.__name__}: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{what} does not fit {model.__name__}: expected a {model.__name__} or a dict of "
            f"its fields, got a {type(value).__name__}"
        )
    try:
        return model(**value)
    except TypeError as exc:
        raise ValidationError(f"{what} does not fit {model.__name__}: {exc}") from None
