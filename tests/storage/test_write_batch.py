"""``Database.write_batch`` hands the driver exactly what SQLAlchemy would."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.sql.dml import UpdateBase

from durably import Durably, DurablyError, testing
from durably.clock import now_ms
from durably.core import claim, enqueue, lease_writes
from durably.core import runs as run_changes
from durably.jobs import build_request
from durably.storage.statements import Prepared


def _prebuilt() -> dict[str, UpdateBase]:
    """Every module-level statement of the core modules that write, alone or in a tuple of them."""
    found = {}
    for module in (claim, lease_writes, enqueue, run_changes):
        for name, value in vars(module).items():
            if isinstance(value, UpdateBase):
                found[f"{module.__name__}.{name}"] = value
            elif (
                isinstance(value, tuple) and value and all(isinstance(v, UpdateBase) for v in value)
            ):
                found.update({f"{module.__name__}.{name}[{i}]": v for i, v in enumerate(value)})
    found["durably.core.claim.claim_statement"] = claim.claim_statement(frozenset({"a", "b'c"}))
    return found


PREBUILT = _prebuilt()


def test_the_prebuilt_statements_are_found() -> None:
    assert {
        "durably.core.claim.claim_statement",
        "durably.core.lease_writes.INSERT_STEP",
        "durably.core.enqueue._INSERT_RUN",
        "durably.core.runs._DELETE_RUN[3]",
        "durably.core.runs._PURGE[0]",
    } < set(PREBUILT)


@pytest.mark.parametrize("name", sorted(PREBUILT))
def test_parameters_match_sqlalchemys_own(durably: Durably, name: str) -> None:
    statement = PREBUILT[name]
    compiled = statement.compile(dialect=durably.engine.dialect)
    required = {bind.key for bind in compiled.binds.values() if bind.required}
    params: dict[str, Any] = {key: f"value-of-{key}" for key in required}
    expected = compiled.construct_params(params)

    prepared = Prepared.compile(statement, durably.engine.dialect)

    assert prepared.sql == compiled.string
    assert prepared.args(params) == tuple(expected[n] for n in compiled.positiontup or ())


def test_write_batches_share_one_connection_and_hand_it_back_after_an_error(
    durably: Durably, driver: str
) -> None:
    """A busy worker's writes do not pay for a pool checkout each (see ``Database._on_writer``)."""
    if driver == "postgresql":
        pytest.skip(
            "SQLite only: durably's one shared writer connection; "
            "on PostgreSQL each batch takes a pooled one"
        )
    db = testing.database(durably)
    job = durably.job("w")(lambda step, input: None)
    job.trigger({"n": -1})  # the schema check and the first checkout
    checkouts: list[int] = []
    sa.event.listen(durably.engine, "checkout", lambda conn, *_: checkouts.append(id(conn)))

    for n in range(10):
        job.trigger({"n": n}, idempotency_key=f"k{n}")  # one write batch each
    assert len(checkouts) <= 1, checkouts  # at most a turnover, were a second to pass

    _rows, batch = enqueue.new_runs([build_request("w", {"n": 0})], now_ms())
    db.write_batch(batch)
    before = len(checkouts)
    with pytest.raises(DurablyError):
        db.write_batch(batch)  # the same run id again: the write fails
    db.write_batch(enqueue.new_runs([build_request("w", {"n": 1})], now_ms())[1])
    # The failed write gave its connection back to the pool; the next took one afresh.
    assert len(checkouts) == before + 1


def test_many_rows_of_an_insert_are_all_stored_and_counted(durably: Durably) -> None:
    """A big batch goes as multi-row INSERTs of 100 rows and the rest row by row (Prepared)."""
    db = testing.database(durably)
    requests = [build_request("many", {"n": n}, labels={"n": str(n)}) for n in range(250)]
    _rows, batch = enqueue.new_runs(requests, now_ms())

    assert [outcome.rowcount for outcome in db.write_batch(batch)] == [250, 250]

    stored = durably.get_runs(job_name="many")
    assert sorted(run.input["n"] for run in stored) == list(range(250))
    assert all(run.labels == {"n": str(run.input["n"])} for run in stored)
    assert [run.id for run in durably.get_runs(labels={"n": "249"})] == [
        run.id for run in stored if run.input["n"] == 249
    ]


def test_many_rows_that_may_be_taken_count_only_those_inserted(durably: Durably) -> None:
    """``ON CONFLICT DO NOTHING`` over 100-row statements: the count is of the rows inserted."""
    db = testing.database(durably)
    now = now_ms()

    def keyed(n: int) -> dict[str, Any]:
        row, _batch = enqueue.keyed_run(
            build_request("keyed", {"n": n}, idempotency_key=f"k{n}"), now
        )
        return row

    db.write_batch([(enqueue._INSERT_RUN_UNLESS_TAKEN, [keyed(n) for n in range(0, 150, 3)])])
    (outcome,) = db.write_batch(
        [(enqueue._INSERT_RUN_UNLESS_TAKEN, [keyed(n) for n in range(150)])]
    )

    assert outcome.rowcount == 100  # 50 of the 150 keys were taken
    stored = durably.get_runs(job_name="keyed")
    assert sorted(run.idempotency_key or "" for run in stored) == sorted(
        f"k{n}" for n in range(150)
    )
