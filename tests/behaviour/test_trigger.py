"""Triggering runs: dispositions, idempotency, concurrency keys, coalescing, labels, batches,
transactional enqueue and the validation that stores nothing on bad input."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from durably import (
    ConflictError,
    DatabaseError,
    Disposition,
    Durably,
    Event,
    Job,
    RunStatus,
    StepContext,
    TriggerItem,
    ValidationError,
    testing,
)
from durably.core import enqueue
from durably.jobs import build_request


def echo(step: StepContext, input: Any) -> Any:
    return input


@pytest.fixture
def job(durably: Durably) -> Job[Any, Any]:
    return durably.job("echo")(echo)


def record(durably: Durably, event_type: str) -> list[Event]:
    events: list[Event] = []
    durably.on(event_type, events.append)
    return events


def run_count(durably: Durably) -> int:
    return len(durably.get_runs())


def lease_oldest(durably: Durably) -> str:
    """Claim the oldest pending run as a worker would (it stays leased)."""
    claimed = testing.claim(durably, "test-worker")
    assert claimed is not None
    return claimed.lease.run_id


# -- basic trigger -------------------------------------------------------------


def test_trigger_returns_pending_created_run(durably: Durably, job: Job[Any, Any]) -> None:
    run = job.trigger({"n": 1})

    assert run.status == "pending"  # str enums compare equal to their value
    assert run.status is RunStatus.PENDING
    assert run.disposition == "created"
    assert run.disposition is Disposition.CREATED
    assert run.job_name == "echo"
    assert run.input == {"n": 1}
    assert run.labels == {}
    assert durably.get_run(run.id) == run  # what trigger returns is what was stored


_TRIGGER_PATHS: dict[str, Callable[[Durably, Job[Any, Any]], list[Any]]] = {
    # Each way a run gets created writes only some columns and leaves the
    # rest to the schema; the run it returns must still be the stored one.
    "plain": lambda d, job: [job.trigger({"n": 1})],
    "labels": lambda d, job: [job.trigger({"n": 1}, labels={"team": "a"})],
    "keys": lambda d, job: [
        job.trigger({"n": 1}, idempotency_key="i", concurrency_key="c", labels={"x": "y"})
    ],
    "batch": lambda d, job: job.batch_trigger([{"n": 1}, TriggerItem({"n": 2}, labels={"a": "b"})]),
    "keyed batch": lambda d, job: job.batch_trigger(
        [TriggerItem({"n": 1}, idempotency_key="i"), TriggerItem({"n": 2}, concurrency_key="c")]
    ),
    "caller's connection": lambda d, job: _on_a_connection(d, job),
}


def _on_a_connection(durably: Durably, job: Job[Any, Any]) -> list[Any]:
    with durably.engine.begin() as conn:
        return [
            job.trigger({"n": 1}, connection=conn),
            *job.batch_trigger([{"n": 2}, {"n": 3}], connection=conn),
        ]


@pytest.mark.parametrize("path", sorted(_TRIGGER_PATHS))
def test_every_way_to_trigger_returns_the_run_as_stored(
    durably: Durably, job: Job[Any, Any], path: str
) -> None:
    created = _TRIGGER_PATHS[path](durably, job)

    assert created
    assert all(run.disposition is Disposition.CREATED for run in created)
    assert [durably.get_run(run.id) for run in created] == created
    assert all(run.current_step_index == 0 and run.lease_generation == 0 for run in created)


def test_trigger_emits_run_trigger_once(durably: Durably, job: Job[Any, Any]) -> None:
    events = record(durably, "run:trigger")

    run = job.trigger({"n": 1}, labels={"team": "a"})

    assert [(e.run_id, e.job_name, e.input, dict(e.labels)) for e in events] == [
        (run.id, "echo", {"n": 1}, {"team": "a"})
    ]


@pytest.mark.parametrize(
    "bad_input",
    [object(), math.nan, math.inf, complex(1, 2), {"nested": [object()]}],
    ids=["object", "nan", "inf", "complex", "nested-object"],
)
def test_input_durably_cannot_store_is_rejected_and_nothing_stored(
    durably: Durably, job: Job[Any, Any], bad_input: Any
) -> None:
    events = record(durably, "run:trigger")

    with pytest.raises(ValidationError):
        job.trigger(bad_input)

    assert run_count(durably) == 0
    assert events == []


# -- idempotency -----------------------------------------------------------------


def test_idempotency_key_returns_existing_run_with_original_input(
    durably: Durably, job: Job[Any, Any]
) -> None:
    first = job.trigger({"v": 1}, idempotency_key="k1", labels={"a": "1"})
    events = record(durably, "run:trigger")

    again = job.trigger({"v": 2}, idempotency_key="k1", labels={"a": "2"})

    assert again.id == first.id
    assert again.disposition is Disposition.IDEMPOTENT
    assert again.input == {"v": 1}
    assert again.labels == {"a": "1"}
    assert again.idempotency_key == "k1"
    assert events == []
    assert run_count(durably) == 1


def test_idempotency_key_returns_terminal_run(durably: Durably, job: Job[Any, Any]) -> None:
    first = job.trigger({"v": 1}, idempotency_key="k1")
    assert durably.process_one()
    assert durably.get_run(first.id).status == "completed"  # type: ignore[union-attr]

    again = job.trigger({"v": 2}, idempotency_key="k1")

    assert again.id == first.id
    assert again.disposition == "idempotent"
    assert again.status == "completed"
    assert again.output == {"v": 1}
    assert run_count(durably) == 1


def test_idempotency_keys_are_scoped_per_job(durably: Durably, job: Job[Any, Any]) -> None:
    other = durably.job("other")(echo)

    a = job.trigger(1, idempotency_key="same")
    b = other.trigger(2, idempotency_key="same")

    assert a.id != b.id
    assert b.disposition == "created"


def test_idempotency_wins_over_concurrency_conflict(durably: Durably, job: Job[Any, Any]) -> None:
    first = job.trigger({"v": 1}, idempotency_key="i", concurrency_key="c")

    again = job.trigger({"v": 2}, idempotency_key="i", concurrency_key="c")

    assert again.id == first.id
    assert again.disposition == "idempotent"


def test_idempotency_wins_over_coalesce(durably: Durably, job: Job[Any, Any]) -> None:
    first = job.trigger({"v": 1}, idempotency_key="i", concurrency_key="c")
    events = record(durably, "run:coalesced")

    again = job.trigger({"v": 2}, idempotency_key="i", concurrency_key="c", coalesce="skip")

    assert again.id == first.id
    assert again.disposition == "idempotent"
    assert events == []


def test_idempotency_hit_on_terminal_run_ignores_pending_key_conflict(
    durably: Durably, job: Job[Any, Any]
) -> None:
    done = job.trigger({"v": 1}, idempotency_key="i", concurrency_key="c")
    assert durably.process_one()
    job.trigger({"v": 2}, concurrency_key="c")  # now the pending run of key "c"

    again = job.trigger({"v": 3}, idempotency_key="i", concurrency_key="c")

    assert again.id == done.id
    assert again.disposition == "idempotent"
    assert again.status == "completed"


# -- concurrency keys and coalescing ---------------------------------------------


def test_second_pending_run_with_same_concurrency_key_conflicts(
    durably: Durably, job: Job[Any, Any]
) -> None:
    first = job.trigger({"v": 1}, concurrency_key="k")
    assert first.disposition == "created"
    assert first.concurrency_key == "k"

    with pytest.raises(ConflictError, match="k"):
        job.trigger({"v": 2}, concurrency_key="k")

    assert [r.id for r in durably.get_runs()] == [first.id]


def test_coalesce_skip_returns_existing_pending_run(durably: Durably, job: Job[Any, Any]) -> None:
    first = job.trigger({"v": 1}, concurrency_key="k", labels={"src": "first"})
    triggered = record(durably, "run:trigger")
    coalesced = record(durably, "run:coalesced")

    again = job.trigger({"v": 2}, concurrency_key="k", coalesce="skip", labels={"src": "second"})

    assert again.id == first.id
    assert again.disposition is Disposition.COALESCED
    assert again.input == {"v": 1}
    assert again.labels == {"src": "first"}
    assert triggered == []
    assert len(coalesced) == 1
    event = coalesced[0]
    assert event.run_id == first.id
    assert event.job_name == "echo"
    assert dict(event.labels) == {"src": "first"}
    assert event.skipped_input == {"v": 2}
    assert event.skipped_labels == {"src": "second"}
    assert run_count(durably) == 1


def test_coalesced_event_without_labels_has_empty_skipped_labels(
    durably: Durably, job: Job[Any, Any]
) -> None:
    job.trigger({"v": 1}, concurrency_key="k")
    coalesced = record(durably, "run:coalesced")

    job.trigger({"v": 2}, concurrency_key="k", coalesce="skip")

    assert [(e.skipped_input, e.skipped_labels) for e in coalesced] == [({"v": 2}, {})]


def test_new_pending_run_allowed_once_first_is_leased(durably: Durably, job: Job[Any, Any]) -> None:
    first = job.trigger({"v": 1}, concurrency_key="k")
    assert lease_oldest(durably) == first.id

    second = job.trigger({"v": 2}, concurrency_key="k")
    assert second.id != first.id
    assert second.disposition == "created"

    with pytest.raises(ConflictError):  # leased + pending + a third
        job.trigger({"v": 3}, concurrency_key="k")
    third = job.trigger({"v": 3}, concurrency_key="k", coalesce="skip")
    assert third.id == second.id
    assert third.disposition == "coalesced"


def test_coalesce_with_only_a_leased_run_creates_a_new_one(
    durably: Durably, job: Job[Any, Any]
) -> None:
    first = job.trigger({"v": 1}, concurrency_key="k")
    lease_oldest(durably)

    again = job.trigger({"v": 2}, concurrency_key="k", coalesce="skip")

    assert again.id != first.id
    assert again.disposition == "created"
    assert again.input == {"v": 2}


def test_coalesce_requires_concurrency_key(durably: Durably, job: Job[Any, Any]) -> None:
    with pytest.raises(ValidationError, match="concurrency_key"):
        job.trigger({"v": 1}, coalesce="skip")
    assert run_count(durably) == 0


@pytest.mark.parametrize("value", ["invalid", "SKIP", "", "replace"])
def test_invalid_coalesce_value_is_rejected(
    durably: Durably, job: Job[Any, Any], value: str
) -> None:
    with pytest.raises(ValidationError, match="coalesce"):
        job.trigger({"v": 1}, concurrency_key="k", coalesce=value)
    with pytest.raises(ValidationError, match="coalesce"):
        job.batch_trigger([TriggerItem({"v": 1}, concurrency_key="k", coalesce=value)])
    assert run_count(durably) == 0


def test_different_concurrency_keys_are_independent(durably: Durably, job: Job[Any, Any]) -> None:
    a = job.trigger(1, concurrency_key="a")
    b = job.trigger(2, concurrency_key="b")

    assert a.id != b.id
    assert {a.disposition, b.disposition} == {Disposition.CREATED}


def test_same_concurrency_key_in_different_jobs_is_independent_for_pending(
    durably: Durably, job: Job[Any, Any]
) -> None:
    other = durably.job("other")(echo)

    a = job.trigger(1, concurrency_key="k")
    b = other.trigger(2, concurrency_key="k")

    assert a.id != b.id
    assert b.disposition == "created"


def test_unlimited_pending_runs_without_concurrency_key(
    durably: Durably, job: Job[Any, Any]
) -> None:
    ids = {job.trigger(i).id for i in range(5)}

    assert len(ids) == 5
    assert len(durably.get_runs(status="pending")) == 5


# -- labels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        {"has space": "x"},
        {'quo"te': "x"},
        {"": "x"},
        {"emoji🙂": "x"},
        {"ok": 1},
        {"ok": None},
        {1: "x"},
    ],
    ids=["space", "quote", "empty-key", "non-ascii", "int-value", "none-value", "int-key"],
)
def test_invalid_labels_are_rejected(
    durably: Durably, job: Job[Any, Any], labels: dict[Any, Any]
) -> None:
    with pytest.raises(ValidationError):
        job.trigger({"v": 1}, labels=labels)
    assert run_count(durably) == 0


def test_kubernetes_style_label_keys_are_allowed_and_filterable(
    durably: Durably, job: Job[Any, Any]
) -> None:
    labels = {"app.kubernetes.io/name": "web", "team_a-b": "x"}
    run = job.trigger({"v": 1}, labels=labels)
    job.trigger({"v": 2}, labels={"app.kubernetes.io/name": "db"})

    assert run.labels == labels
    stored = durably.get_run(run.id)
    assert stored is not None
    assert stored.labels == labels
    found = durably.get_runs(labels={"app.kubernetes.io/name": "web"})
    assert [r.id for r in found] == [run.id]


# -- bad option values -------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"idempotency_key": ""},
        {"concurrency_key": ""},
        {"idempotency_key": 123},
        {"concurrency_key": 123},
        {"idempotency_key": "x" * 256},
        {"labels": ["not", "a", "mapping"]},
    ],
    ids=["empty-idem", "empty-conc", "int-idem", "int-conc", "long-idem", "labels-list"],
)
def test_bad_option_values_are_rejected(
    durably: Durably, job: Job[Any, Any], options: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        job.trigger({"v": 1}, **options)
    assert run_count(durably) == 0


# -- batch_trigger -----------------------------------------------------------------


def test_batch_trigger_creates_pending_runs(durably: Durably, job: Job[Any, Any]) -> None:
    events = record(durably, "run:trigger")

    runs = job.batch_trigger([{"n": 1}, {"n": 2}, {"n": 3}])

    assert [r.input for r in runs] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert all(r.status == "pending" and r.disposition == "created" for r in runs)
    assert len({r.id for r in runs}) == 3
    assert run_count(durably) == 3
    assert [e.run_id for e in events] == [r.id for r in runs]


def test_large_batch_keeps_order_inputs_and_labels(durably: Durably, job: Job[Any, Any]) -> None:
    items = [TriggerItem({"n": n}, labels={"shard": str(n % 3)}) for n in range(500)]

    runs = job.batch_trigger(items)

    assert [r.input for r in runs] == [{"n": n} for n in range(500)]
    assert [r.labels for r in runs] == [{"shard": str(n % 3)} for n in range(500)]
    assert [r.id for r in runs] == sorted(r.id for r in runs)  # created in order: FIFO
    stored = durably.get_runs(labels={"shard": "1"})
    assert sorted(r.input["n"] for r in stored) == list(range(1, 500, 3))
    assert sorted(durably.get_runs(), key=lambda r: r.id) == runs  # returned as stored


def test_batch_trigger_empty_list(durably: Durably, job: Job[Any, Any]) -> None:
    assert job.batch_trigger([]) == []
    assert run_count(durably) == 0


def test_batch_trigger_validates_all_items_first(durably: Durably, job: Job[Any, Any]) -> None:
    with pytest.raises(ValidationError, match="index 1"):
        job.batch_trigger([{"ok": 1}, {"bad": object()}, {"ok": 3}])
    with pytest.raises(ValidationError, match="index 2"):
        job.batch_trigger([1, 2, TriggerItem(3, labels={"bad key": "x"})])

    assert run_count(durably) == 0


def test_batch_trigger_per_item_options(durably: Durably, job: Job[Any, Any]) -> None:
    runs = job.batch_trigger(
        [
            TriggerItem({"n": 1}, idempotency_key="idem-1", labels={"env": "prod"}),
            TriggerItem({"n": 2}, concurrency_key="conc-1"),
            {"n": 3},
        ]
    )

    stored = [durably.get_run(r.id) for r in runs]
    assert [(s.idempotency_key, s.concurrency_key, dict(s.labels)) for s in stored if s] == [
        ("idem-1", None, {"env": "prod"}),
        (None, "conc-1", {}),
        (None, None, {}),
    ]
    again = job.trigger({"n": 9}, idempotency_key="idem-1")
    assert (again.id, again.disposition) == (runs[0].id, Disposition.IDEMPOTENT)


def test_batch_same_key_with_skip_coalesces_onto_first(
    durably: Durably, job: Job[Any, Any]
) -> None:
    coalesced = record(durably, "run:coalesced")

    runs = job.batch_trigger(
        [
            TriggerItem({"n": 1}, concurrency_key="k", coalesce="skip"),
            TriggerItem({"n": 2}, concurrency_key="k", coalesce="skip"),
        ]
    )

    assert [r.disposition for r in runs] == [Disposition.CREATED, Disposition.COALESCED]
    assert runs[0].id == runs[1].id
    assert runs[1].input == {"n": 1}
    assert [e.skipped_input for e in coalesced] == [{"n": 2}]
    assert run_count(durably) == 1


def test_batch_mixing_keys_and_skip(durably: Durably, job: Job[Any, Any]) -> None:
    runs = job.batch_trigger(
        [
            TriggerItem(1, concurrency_key="a"),
            TriggerItem(2, concurrency_key="b"),
            TriggerItem(3, concurrency_key="a", coalesce="skip"),
        ]
    )

    assert [r.disposition for r in runs] == ["created", "created", "coalesced"]
    assert runs[2].id == runs[0].id
    assert run_count(durably) == 2


def test_batch_same_key_without_skip_is_all_or_nothing(
    durably: Durably, job: Job[Any, Any]
) -> None:
    events = record(durably, "run:trigger")

    with pytest.raises(ConflictError):
        job.batch_trigger(
            [
                TriggerItem({"n": 0}),
                TriggerItem({"n": 1}, concurrency_key="k"),
                TriggerItem({"n": 2}, concurrency_key="k"),
            ]
        )

    assert run_count(durably) == 0
    assert events == []


def test_batch_conflicting_with_existing_pending_run_creates_nothing(
    durably: Durably, job: Job[Any, Any]
) -> None:
    existing = job.trigger({"n": 0}, concurrency_key="k")

    with pytest.raises(ConflictError):
        job.batch_trigger([{"n": 1}, TriggerItem({"n": 2}, concurrency_key="k")])

    assert [r.id for r in durably.get_runs()] == [existing.id]


def test_a_batch_holds_its_requests_where_the_garbage_collector_does_not_look() -> None:
    """A batch keeps one request per run alive while it is written. Untracked,
    they do not grow the collector's oldest generation, whose growth sets off
    full collections of the whole process (see
    docs/contributing/performance-history.md); keys and labels are the exception, as they are rare in a batch."""
    plain = build_request("job", {"n": 1, "tags": ["a", "b"], "note": None})
    keyed = build_request("job", {"n": 1}, idempotency_key="k", concurrency_key="c")
    labelled = build_request("job", {"n": 1}, labels={"tenant": "a"})

    assert not gc.is_tracked(plain)
    assert not gc.is_tracked(keyed)
    assert gc.is_tracked(labelled)  # it holds its labels' dict
    assert labelled["labels"] == {"tenant": "a"}


# -- transactional enqueue -----------------------------------------------------------


def _orders_table(durably: Durably) -> None:
    """The application's own table (an id the database numbers, in every dialect)."""
    orders = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item", sa.Text),
    )
    with durably.engine.connect() as conn, conn.begin():
        orders.create(conn)


def _orders(durably: Durably) -> list[str]:
    with durably.engine.connect() as conn:
        rows = [row[0] for row in conn.exec_driver_sql("SELECT item FROM orders ORDER BY id")]
        conn.rollback()
    return rows


def test_transactional_trigger_is_visible_after_commit(
    durably: Durably, job: Job[Any, Any]
) -> None:
    _orders_table(durably)
    with durably.engine.connect() as conn:
        tx = conn.begin()
        conn.exec_driver_sql("INSERT INTO orders (item) VALUES ('book')")
        run = job.trigger({"order": "book"}, connection=conn)
        assert run.disposition == "created"
        tx.commit()

    stored = durably.get_run(run.id)
    assert stored is not None
    assert stored.input == {"order": "book"}
    assert _orders(durably) == ["book"]
    assert durably.process_one()
    assert durably.get_run(run.id).status == "completed"  # type: ignore[union-attr]


def test_transactional_trigger_is_absent_after_rollback(
    durably: Durably, job: Job[Any, Any]
) -> None:
    _orders_table(durably)
    with durably.engine.connect() as conn:
        tx = conn.begin()
        conn.exec_driver_sql("INSERT INTO orders (item) VALUES ('book')")
        run = job.trigger({"order": "book"}, connection=conn, labels={"a": "b"})
        tx.rollback()

    assert durably.get_run(run.id) is None
    assert run_count(durably) == 0
    assert _orders(durably) == []
    assert durably.process_one() is False


def test_transactional_batch_trigger_follows_the_callers_transaction(
    durably: Durably, job: Job[Any, Any]
) -> None:
    with durably.engine.connect() as conn:
        tx = conn.begin()
        rolled_back = job.batch_trigger([1, 2], connection=conn)
        tx.rollback()
        tx = conn.begin()
        committed = job.batch_trigger([3, 4], connection=conn)
        tx.commit()

    assert all(durably.get_run(r.id) is None for r in rolled_back)
    assert sorted(durably.get_runs(), key=lambda r: r.id) == committed


def test_transactional_trigger_emits_run_trigger_only_on_commit(
    durably: Durably, job: Job[Any, Any]
) -> None:
    # A listener (a live run list, a webhook) must never hear of a run that never existed.
    events = record(durably, "run:trigger")
    with durably.engine.connect() as conn:
        tx = conn.begin()
        job.trigger({"n": 1}, connection=conn)
        tx.rollback()
        assert events == []
        tx = conn.begin()
        kept = job.trigger({"n": 2}, connection=conn)
        tx.commit()

    assert [e.run_id for e in events] == [kept.id]


def test_transactional_trigger_is_announced_once_others_can_read_it(
    durably: Durably, job: Job[Any, Any]
) -> None:
    # A listener that looks the new run up (a live list, a webhook) finds it:
    # the event comes after the driver's COMMIT, not just before it.
    found: list[Any] = []
    durably.on("run:trigger", lambda event: found.append(durably.get_run(event.run_id)))
    with durably.engine.begin() as conn:
        run = job.trigger({"n": 1}, connection=conn)
        assert found == []

    assert found == [durably.get_run(run.id)]
    assert found[0] is not None


def test_a_commit_that_fails_announces_nothing(durably: Durably, job: Job[Any, Any]) -> None:
    # A deferred foreign key is checked at COMMIT, which then fails: the run
    # never existed, and no listener may hear of it.
    caller = sa.create_engine(durably.engine.url)
    if caller.dialect.name == "sqlite":  # PostgreSQL checks foreign keys always
        sa.event.listen(
            caller,
            "connect",
            lambda dbapi_conn, _record: dbapi_conn.cursor().execute("PRAGMA foreign_keys=ON"),
        )
    events = record(durably, "run:trigger")
    try:
        with caller.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql(
                "CREATE TABLE children (parent_id INTEGER "
                "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        with caller.connect() as conn:
            tx = conn.begin()
            conn.exec_driver_sql("INSERT INTO children (parent_id) VALUES (404)")
            run = job.trigger({"n": 1}, connection=conn)
            # (libSQL's driver raises a bare ValueError, which SQLAlchemy passes on as it is.)
            with pytest.raises((sa.exc.IntegrityError, ValueError), match=r"(?i)foreign key"):
                tx.commit()
            assert events == []
            tx.rollback()
        assert events == []
        assert durably.get_run(run.id) is None

        with caller.begin() as conn:  # the connection serves the next transaction as before
            kept = job.trigger({"n": 2}, connection=conn)
        assert [e.run_id for e in events] == [kept.id]
    finally:
        caller.dispose()


def test_a_trigger_in_a_savepoint_rolled_back_is_not_announced(
    durably: Durably, job: Job[Any, Any]
) -> None:
    events = record(durably, "run:trigger")
    with durably.engine.begin() as conn:
        before = job.trigger({"n": 1}, connection=conn)
        with conn.begin_nested() as savepoint:
            dropped = job.trigger({"n": 2}, connection=conn)
            with conn.begin_nested():
                dropped_inside = job.trigger({"n": 3}, connection=conn)
            savepoint.rollback()
        with conn.begin_nested():
            released = job.trigger({"n": 4}, connection=conn)
        after = job.trigger({"n": 5}, connection=conn)

    kept = [before.id, released.id, after.id]
    assert [e.run_id for e in events] == kept
    assert sorted(r.id for r in durably.get_runs()) == sorted(kept)
    assert durably.get_run(dropped.id) is None
    assert durably.get_run(dropped_inside.id) is None


def test_transactional_trigger_sees_its_own_uncommitted_runs(
    durably: Durably, job: Job[Any, Any]
) -> None:
    with durably.engine.connect() as conn:
        tx = conn.begin()
        first = job.trigger(1, connection=conn, idempotency_key="i", concurrency_key="k")
        again = job.trigger(2, connection=conn, idempotency_key="i")
        with pytest.raises(ConflictError):
            job.trigger(3, connection=conn, concurrency_key="k")
        tx.commit()

    assert (again.id, again.disposition) == (first.id, Disposition.IDEMPOTENT)
    assert [r.id for r in durably.get_runs()] == [first.id]


# -- job registration ----------------------------------------------------------------


def test_get_job_by_name(durably: Durably, job: Job[Any, Any]) -> None:
    assert durably.get_job("echo") is job
    assert durably.get_job("nope") is None


def test_registering_same_function_twice_returns_same_job(durably: Durably) -> None:
    first = durably.job("twice")(echo)
    second = durably.job("twice")(echo)

    assert first is second


def test_registering_different_function_under_same_name_is_rejected(
    durably: Durably, job: Job[Any, Any]
) -> None:
    def other(step: StepContext, input: Any) -> Any:
        return None

    with pytest.raises(ValidationError, match="already registered"):
        durably.job("echo")(other)
    assert durably.get_job("echo") is job


@pytest.mark.parametrize("name", ["", 42])
def test_invalid_job_name_is_rejected(durably: Durably, name: Any) -> None:
    register: Callable[..., Any] = durably.job(name)
    with pytest.raises(ValidationError):
        register(echo)


def test_bare_decorator_uses_function_name(durably: Durably) -> None:
    @durably.job
    def my_job(step: StepContext, input: Any) -> Any:
        return input

    assert my_job.name == "my_job"
    assert durably.get_job("my_job") is my_job


def test_a_key_freed_between_the_insert_and_the_lookup_is_taken_again(
    durably: Durably, job: Job[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trigger with keys inserts first and reads what took the key only after
    # its write has committed. If that run is gone by then (claimed, cancelled,
    # deleted), the trigger inserts again instead of failing.
    first = job.trigger({"v": 1}, concurrency_key="c")
    database = testing.database(durably)
    read = database.read
    cancelled: list[str] = []

    def read_after_a_cancel(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if fn is enqueue.taken_by and not cancelled:
            cancelled.append(durably.cancel(first.id).id)
        return read(fn, *args, **kwargs)

    monkeypatch.setattr(database, "read", read_after_a_cancel)
    second = job.trigger({"v": 2}, concurrency_key="c", coalesce="skip")

    assert cancelled == [first.id]
    assert second.id != first.id
    assert second.disposition == "created"
    assert durably.get_run(second.id) == second


def test_a_callers_connection_through_another_sqlite_copy_is_refused(
    durably: Durably, job: Job[Any, Any], driver: str, db_path: Path
) -> None:
    # Python's sqlite3 and libSQL each carry their own SQLite; in one process
    # they do not see each other's locks, and writes can get lost.
    if driver in ("remote", "postgresql"):
        pytest.skip("SQLite only: a server's files are not opened in this process")
    same = sa.create_engine(durably.engine.url)
    other = sa.create_engine(f"{'sqlite+libsql' if driver == 'sqlite' else 'sqlite'}:///{db_path}")
    try:
        with same.connect() as conn:
            kept = job.trigger({"n": 1}, connection=conn)
            conn.commit()
        with other.connect() as conn, pytest.raises(ValidationError, match="two copies of SQLite"):
            job.trigger({"n": 2}, connection=conn)
    finally:
        same.dispose()
        other.dispose()
    assert [run.id for run in durably.get_runs()] == [kept.id]


def _take_every_connection(durably: Durably) -> list[sa.Connection]:
    held: list[sa.Connection] = []
    while True:
        try:
            held.append(durably.engine.connect())
        except sa.exc.TimeoutError:  # the pool's own error, past lock_timeout
            return held


def test_a_trigger_that_finds_no_free_connection_raises_database_error_and_stores_nothing(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(lock_timeout=0.3)
    job = durably.job("echo")(echo)
    held = _take_every_connection(durably)  # as many threads calling at once would

    with pytest.raises(DatabaseError, match="No connection of durably's pool came free"):
        job.trigger({"n": 1})
    with pytest.raises(DatabaseError, match="No connection of durably's pool came free"):
        asyncio.run(job.trigger_async({"n": 2}))
    with pytest.raises(DatabaseError, match="No connection of durably's pool came free"):
        durably.get_runs()

    for connection in held:
        connection.close()
    run = job.trigger({"n": 3})
    assert [r.id for r in durably.get_runs()] == [run.id]
