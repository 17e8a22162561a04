"""``Database.write_batch`` hands the driver exactly what SQLAlchemy would."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.sql.dml import UpdateBase

from durably import Durably, leases, runs
from durably.database import _Prepared


def _prebuilt() -> dict[str, UpdateBase]:
    """Every module-level statement of leases and runs, alone or in a tuple of them."""
    found = {}
    for module in (leases, runs):
        for name, value in vars(module).items():
            if isinstance(value, UpdateBase):
                found[f"{module.__name__}.{name}"] = value
            elif (
                isinstance(value, tuple) and value and all(isinstance(v, UpdateBase) for v in value)
            ):
                found.update({f"{module.__name__}.{name}[{i}]": v for i, v in enumerate(value)})
    return found


PREBUILT = _prebuilt()


def test_the_prebuilt_statements_are_found() -> None:
    assert {
        "durably.leases._CLAIM",
        "durably.leases._INSERT_STEP",
        "durably.runs._INSERT_RUN",
        "durably.runs._DELETE_RUN[3]",
        "durably.runs._PURGE[0]",
    } < set(PREBUILT)


@pytest.mark.parametrize("name", sorted(PREBUILT))
def test_parameters_match_sqlalchemys_own(durably: Durably, name: str) -> None:
    statement = PREBUILT[name]
    compiled = statement.compile(dialect=durably.engine.dialect)
    required = {bind.key for bind in compiled.binds.values() if bind.required}
    params: dict[str, Any] = {key: f"value-of-{key}" for key in required}
    expected = compiled.construct_params(params)

    prepared = _Prepared.compile(statement, durably.engine.dialect)

    assert prepared.sql == compiled.string
    assert prepared.args(params) == tuple(expected[n] for n in compiled.positiontup or ())
