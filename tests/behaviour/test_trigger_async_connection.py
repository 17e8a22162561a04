"""``trigger_async(..., connection=)``: a run written in the caller's async transaction.

An ASGI app keeps its rows with an ``AsyncEngine`` (aiosqlite, psycopg's async
connections); a run enqueued in the same transaction must exist if and only if
that transaction commits, and be announced only once it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from durably import Durably, Event, Job, ValidationError
from tests.behaviour.recording import record_events

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}

orders = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item", sa.Text, nullable=False),
)


@pytest.fixture(params=sorted(ASYNC_DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_engine(db_url: str, driver: str, durably: Durably) -> Iterator[AsyncEngine]:
    """The application's own async engine on durably's database, with its orders table."""
    with durably.engine.begin() as conn:
        orders.create(conn)
    # Unpooled: each test's asyncio.run is a loop of its own, and an async driver's
    # connection belongs to the loop that opened it (an app has one loop).
    url = make_url(db_url).set(drivername=ASYNC_DRIVERS[driver])
    engine = create_async_engine(url, poolclass=NullPool)
    yield engine
    asyncio.run(engine.dispose())


@pytest.fixture
def job(durably: Durably) -> Job[Any, Any]:
    @durably.job("ship")
    def ship(step: Any, input: Any) -> Any:
        return step.run("ship", lambda: f"shipped {input['order']}")

    return ship


def _orders(durably: Durably) -> list[str]:
    with durably.engine.connect() as conn:
        items = list(conn.scalars(sa.select(orders.c.item).order_by(orders.c.id)))
        conn.rollback()
    return items


async def _place_order(
    app_engine: AsyncEngine, job: Job[Any, Any], announced: list[Event], *, commit: bool
) -> str:
    """An order row and its run in one transaction of the app's, then committed or rolled back."""
    async with app_engine.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(orders.insert().values(item="book"))
        run = await job.trigger_async({"order": "book"}, connection=conn)
        assert announced == []  # never before the COMMIT
        await (transaction.commit() if commit else transaction.rollback())
    return run.id


def test_a_run_triggered_in_a_committed_transaction_exists_and_runs(
    durably: Durably, job: Job[Any, Any], app_engine: AsyncEngine
) -> None:
    announced = record_events(durably, "run:trigger")

    run_id = asyncio.run(_place_order(app_engine, job, announced, commit=True))

    assert [event.run_id for event in announced] == [run_id]
    assert _orders(durably) == ["book"]
    assert durably.process_one()
    assert durably.get_run(run_id).output == "shipped book"  # type: ignore[union-attr]


def test_a_rolled_back_transaction_leaves_no_run_and_no_announcement(
    durably: Durably, job: Job[Any, Any], app_engine: AsyncEngine
) -> None:
    announced = record_events(durably, "run:trigger")

    run_id = asyncio.run(_place_order(app_engine, job, announced, commit=False))

    assert durably.get_run(run_id) is None
    assert announced == []
    assert _orders(durably) == []
    assert durably.process_one() is False


def test_an_async_session_s_connection_takes_a_batch(
    durably: Durably, job: Job[Any, Any], app_engine: AsyncEngine
) -> None:
    async def place_orders() -> list[str]:
        async with AsyncSession(app_engine) as session, session.begin():
            await session.execute(orders.insert().values(item="pen"))
            runs = await job.batch_trigger_async(
                [{"order": "pen"}, {"order": "ink"}], connection=await session.connection()
            )
        return [run.id for run in runs]

    run_ids = asyncio.run(place_orders())

    assert sorted(run.id for run in durably.get_runs()) == sorted(run_ids)
    assert durably.process_until_idle() == 2


def test_a_connection_of_the_other_kind_is_refused_and_nothing_is_written(
    durably: Durably, job: Job[Any, Any], app_engine: AsyncEngine
) -> None:
    with durably.engine.begin() as conn, pytest.raises(ValidationError, match="AsyncConnection"):
        asyncio.run(job.trigger_async({"order": "book"}, connection=conn))  # type: ignore[arg-type]

    async def with_an_async_connection() -> None:
        async with app_engine.begin() as conn:
            with pytest.raises(ValidationError, match="takes a SQLAlchemy Connection"):
                job.trigger({"order": "book"}, connection=conn)  # type: ignore[arg-type]

    asyncio.run(with_an_async_connection())
    assert durably.get_runs() == []


def test_aiosqlite_beside_libsql_on_one_file_is_refused(tmp_path: Path) -> None:
    """Two copies of SQLite in one process do not see each other's locks."""
    path = tmp_path / "shared.db"
    with Durably(f"sqlite+libsql:///{path}") as durably:
        durably.migrate()
        job = durably.job("ship")(lambda step, input: input)
        app_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

        async def trigger() -> None:
            async with app_engine.begin() as conn:
                await job.trigger_async(1, connection=conn)

        try:
            with pytest.raises(ValidationError, match="two copies of SQLite"):
                asyncio.run(trigger())
        finally:
            asyncio.run(app_engine.dispose())
        assert durably.get_runs() == []


def test_asyncpg_connections_enqueue_too(postgres_db: str) -> None:
    """durably's statements are compiled by the caller's dialect: asyncpg's as well as psycopg's."""
    with Durably(postgres_db) as durably:
        durably.migrate()
        with durably.engine.begin() as conn:
            orders.create(conn)
        job = durably.job("ship")(lambda step, input: input)
        announced = record_events(durably, "run:trigger")

        async def place_orders() -> tuple[str, str]:
            # asyncpg's connections belong to the loop that made them: one loop for both.
            url = make_url(postgres_db).set(drivername="postgresql+asyncpg")
            app_engine = create_async_engine(url)
            try:
                kept = await _place_order(app_engine, job, announced, commit=True)
                return kept, await _place_order(app_engine, job, [], commit=False)
            finally:
                await app_engine.dispose()

        kept, dropped = asyncio.run(place_orders())
        assert [event.run_id for event in announced] == [kept]
        assert [run.id for run in durably.get_runs()] == [kept]
        assert durably.get_run(dropped) is None
        assert _orders(durably) == ["book"]
