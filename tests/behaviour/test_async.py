"""``async def`` jobs, the asyncio engine's own behaviour and the ``*_async`` API twins.

The behavioural suite runs on both engines through ``conftest.py``; this
module covers what only exists on the async side: awaited steps, cancelling
an awaiting step, the event loop staying free, and each ``*_async`` method.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from durably import (
    AsyncStepContext,
    CancelledError,
    ConflictError,
    Durably,
    NotFoundError,
    RunFailedError,
    RunStatus,
    StepContext,
    StepStatus,
    ValidationError,
    testing,
)
from durably.core import claim, lease_writes
from durably.events import Event
from durably.storage import Batch, Outcome
from tests.faults import refuse_first_step_write

T = TypeVar("T")
WAIT = 10.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- async jobs ---------------------------------------------------------------


def test_async_job_awaits_async_steps_and_runs_def_steps_off_the_loop(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(preserve_steps=True)
    threads: dict[str, str] = {}

    async def probe() -> dict[str, int]:
        threads["probe"] = threading.current_thread().name
        await asyncio.sleep(0.01)
        return {"width": 640}

    def thumb(meta: dict[str, int]) -> str:
        threads["thumb"] = threading.current_thread().name
        return f"thumb-{meta['width'] // 2}"

    @durably.job("resize")
    async def resize(step: AsyncStepContext, input: dict[str, str]) -> dict[str, Any]:
        threads["job"] = threading.current_thread().name
        meta = await step.run("probe", probe)
        small = await step.run("thumb", lambda: thumb(meta))
        step.progress(1, 1, "done")
        step.log.info("resized", {"file": input["file"]})
        return {"thumb": small, "meta": meta}

    async def main() -> Any:
        await durably.start_async()
        try:
            return await resize.trigger_and_wait_async({"file": "a.png"}, timeout=WAIT)
        finally:
            await durably.stop_async()

    done = run(main())
    assert done.status is RunStatus.COMPLETED
    assert done.output == {"thumb": "thumb-320", "meta": {"width": 640}}
    assert done.progress is not None
    assert (done.progress.current, done.progress.total, done.progress.message) == (1, 1, "done")
    assert [(log.message, log.data) for log in durably.get_logs(done.id)] == [
        ("resized", {"file": "a.png"})
    ]
    assert threads["probe"] == threads["job"]  # awaited on the loop
    assert threads["thumb"] != threads["job"]  # the def step ran in a thread
    assert threads["thumb"].startswith("durably-step")


def test_async_job_resumes_from_stored_steps_after_a_failure(durably: Durably) -> None:
    calls: Counter[str] = Counter()

    @durably.job("flaky")
    async def flaky(step: AsyncStepContext, input: None) -> str:
        async def first() -> str:
            calls["first"] += 1
            return "one"

        async def second() -> str:
            calls["second"] += 1
            if calls["second"] == 1:
                raise RuntimeError("transient")
            return "two"

        return f"{await step.run('first', first)}/{await step.run('second', second)}"

    async def main() -> tuple[Any, Any]:
        created = await flaky.trigger_async(None)
        assert await durably.process_one_async()
        failed = await durably.get_run_async(created.id)
        await durably.retry_async(created.id)
        assert await durably.process_until_idle_async() == 1
        return failed, await durably.get_run_async(created.id)

    failed, done = run(main())
    assert failed.status is RunStatus.FAILED
    assert failed.error == "RuntimeError: transient"
    assert done.status is RunStatus.COMPLETED
    assert done.output == "one/two"
    assert calls == Counter({"first": 1, "second": 2})


def test_async_job_on_the_thread_engine_and_in_process_one(durably: Durably) -> None:
    loops: set[int] = set()

    @durably.job("double")
    async def double(step: AsyncStepContext, input: int) -> int:
        loops.add(id(asyncio.get_running_loop()))

        async def compute() -> int:
            await asyncio.sleep(0)
            return input * 2

        return await step.run("compute", compute)

    durably.start()
    assert double.trigger_and_wait(21, timeout=WAIT).output == 42
    durably.stop()
    run_id = double.trigger(5).id
    assert durably.process_one()
    done = durably.get_run(run_id)
    assert done is not None
    assert done.output == 10
    assert len(loops) == 1  # one durably-owned loop serves every async run


def test_def_job_on_the_asyncio_engine_runs_in_a_worker_thread(durably: Durably) -> None:
    seen: dict[str, Any] = {}

    @durably.job("sync")
    def sync_job(step: StepContext, input: None) -> str:
        try:
            asyncio.get_running_loop()
            seen["loop"] = True
        except RuntimeError:
            seen["loop"] = False
        seen["thread"] = threading.current_thread().name
        return step.run("s", lambda: "ok")

    async def main() -> Any:
        await durably.start_async()
        try:
            return await sync_job.trigger_and_wait_async(None, timeout=WAIT)
        finally:
            await durably.stop_async()

    assert run(main()).output == "ok"
    assert seen == {"loop": False, "thread": seen["thread"]}
    assert seen["thread"].startswith("durably-step")


def test_cancel_cancels_the_awaiting_step_and_no_later_step_runs(durably: Durably) -> None:
    events: list[str] = []

    @durably.job("long")
    async def long(step: AsyncStepContext, input: None) -> str:
        async def wait_forever() -> str:
            events.append("started")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("step-task-cancelled")
                raise
            return "never"

        await step.run("wait", wait_forever)
        events.append("after")  # must not happen
        return "never"

    async def main() -> tuple[Any, list[Any]]:
        await durably.start_async()
        try:
            created = await long.trigger_async(None)
            while "started" not in events:
                await asyncio.sleep(0.01)
            await durably.cancel_async(created.id)
            with pytest.raises(CancelledError):
                await durably.wait_for_run_async(created.id, timeout=WAIT)
            while testing.held_lease(durably, created.id) is not None:
                await asyncio.sleep(0.01)
            return await durably.get_run_async(created.id), await durably.get_steps_async(
                created.id
            )
        finally:
            await durably.stop_async(timeout=WAIT)

    cancelled, steps = run(main())
    assert cancelled.status is RunStatus.CANCELLED
    assert events == ["started", "step-task-cancelled"]
    assert [(s.name, s.status) for s in steps] in ([], [("wait", StepStatus.CANCELLED)])


def test_a_lost_lease_cancels_the_awaiting_step_and_stops_the_run(
    make_durably: Callable[..., Durably],
) -> None:
    owner = make_durably(stale_threshold=0.5, heartbeat_interval=0.1)
    calls: Counter[str] = Counter()
    started = threading.Event()

    @owner.job("stolen")
    async def stolen(step: AsyncStepContext, input: None) -> str:
        async def slow() -> str:
            calls["slow"] += 1
            started.set()
            await asyncio.sleep(60)
            return "slow"

        async def after() -> str:
            calls["after"] += 1
            return "after"

        await step.run("slow", slow)
        return await step.run("after", after)

    async def main() -> str:
        await owner.start_async()
        try:
            created = await stolen.trigger_async(None)
            await asyncio.to_thread(started.wait, WAIT)
            lease = testing.held_lease(owner, created.id)
            assert lease is not None
            # Another worker's claim would bump the generation: the renewal
            # then finds the lease gone and aborts the run here.
            await testing.async_database(owner).call(_bump_generation, owner, created.id)
            while testing.held_lease(owner, created.id) is not None:
                await asyncio.sleep(0.01)
            return str(lease.abort_reason)
        finally:
            await owner.stop_async(timeout=WAIT)

    assert run(main()) == "lease-lost"
    assert calls == Counter({"slow": 1})


def _bump_generation(durably: Durably, run_id: str) -> None:
    import sqlalchemy as sa

    from durably.schema import runs

    def bump(conn: sa.Connection) -> None:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(lease_generation=runs.c.lease_generation + 1, lease_owner="thief")
        )

    testing.database(durably).write(bump)


def test_step_wait_wakes_early_on_cancel(durably: Durably) -> None:
    woke: list[bool] = []

    @durably.job("sleeper")
    async def sleeper(step: AsyncStepContext, input: None) -> None:
        woke.append(await step.wait(60))

    async def main() -> None:
        await durably.start_async()
        try:
            created = await sleeper.trigger_async(None)
            while testing.held_lease(durably, created.id) is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            await durably.cancel_async(created.id)
            while not woke:
                await asyncio.sleep(0.01)
        finally:
            await durably.stop_async(timeout=WAIT)

    run(main())
    assert woke == [True]


def test_progress_and_logs_of_an_async_job_are_stored_in_order(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(preserve_steps=True)

    @durably.job("chatty")
    async def chatty(step: AsyncStepContext, input: int) -> int:
        for i in range(input):
            step.progress(i + 1, input)
            step.log.info(f"line {i}")
        return input

    async def main() -> Any:
        created = await chatty.trigger_async(50)
        assert await durably.process_one_async()
        return await durably.get_run_async(created.id)

    done = run(main())
    assert done.progress.current == 50
    assert [log.message for log in durably.get_logs(done.id)] == [f"line {i}" for i in range(50)]


def test_an_async_job_that_raises_fails_the_run_with_its_error(durably: Durably) -> None:
    @durably.job("broken")
    async def broken(step: AsyncStepContext, input: None) -> None:
        async def explode() -> None:
            raise ValueError("bad input")

        await step.run("explode", explode)

    async def main() -> None:
        await durably.start_async()
        try:
            with pytest.raises(RunFailedError, match="ValueError: bad input"):
                await broken.trigger_and_wait_async(None, timeout=WAIT)
        finally:
            await durably.stop_async()

    run(main())
    [failed] = durably.get_failed_runs()
    assert [(s.name, s.status) for s in durably.get_steps(failed.id)] == [
        ("explode", StepStatus.FAILED)
    ]


# -- the engines side by side ---------------------------------------------------


def test_only_one_engine_runs_at_a_time(durably: Durably) -> None:
    async def main() -> None:
        await durably.start_async()
        try:
            await durably.start_async()  # idempotent
            assert durably.engine_name == "asyncio"
            with pytest.raises(ConflictError):
                durably.start()
            with pytest.raises(ConflictError):
                durably.stop()
        finally:
            await durably.stop_async()
        assert durably.engine_name is None

    run(main())
    durably.start()
    assert durably.engine_name == "thread"
    with pytest.raises(ConflictError):
        run(durably.start_async())
    durably.stop()


def test_async_with_closes_the_instance(db_url: str) -> None:
    async def main() -> Any:
        async with Durably(db_url) as durably:
            await durably.migrate_async()

            @durably.job("hello")
            async def hello(step: AsyncStepContext, input: str) -> str:
                return f"hello {input}"

            await durably.start_async()
            return await hello.trigger_and_wait_async("world", timeout=WAIT)

    assert run(main()).output == "hello world"


# -- the *_async API twins ----------------------------------------------------------


def test_async_twins_read_and_change_runs(durably: Durably) -> None:
    @durably.job("echo")
    async def echo(step: AsyncStepContext, input: dict[str, int]) -> dict[str, int]:
        if input.get("fail"):
            raise RuntimeError("asked to fail")
        return input

    async def main() -> None:
        first, second = await echo.batch_trigger_async([{"n": 1}, {"n": 2}])
        assert await echo.batch_trigger_async([]) == []
        assert [r.id for r in await echo.get_runs_async(status="pending")] == [second.id, first.id]
        assert (await echo.get_run_async(first.id)).input == {"n": 1}  # type: ignore[union-attr]
        assert await durably.get_runs_async(job_name="other") == []

        assert await durably.process_until_idle_async(max_runs=1) == 1
        assert await durably.process_until_idle_async() == 1
        done = await durably.wait_for_run_async(first.id, timeout=WAIT)
        assert done.output == {"n": 1}
        assert [s.name for s in await durably.get_steps_async(first.id)] == []
        assert await durably.get_logs_async(first.id) == []

        failing = await echo.trigger_async({"fail": 1})
        assert await durably.process_one_async()
        [failed] = await durably.get_failed_runs_async()
        assert failed.id == failing.id
        with pytest.raises(RunFailedError):
            await durably.wait_for_run_async(failing.id, timeout=WAIT)

        again = await durably.retrigger_async(first.id)
        assert again.id != first.id
        assert again.input == {"n": 1}
        cancelled = await durably.cancel_async(again.id)
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(CancelledError):
            await durably.wait_for_run_async(again.id, timeout=WAIT)
        retried = await durably.retry_async(again.id)
        assert retried.status is RunStatus.PENDING
        await durably.cancel_async(again.id)

        await durably.delete_run_async(failing.id)
        assert await durably.get_run_async(failing.id) is None
        with pytest.raises(NotFoundError):
            await durably.wait_for_run_async(failing.id, timeout=WAIT)

        future = datetime.now(timezone.utc) + timedelta(days=1)
        assert await durably.purge_runs_async(future) == 3
        assert await durably.get_runs_async() == []
        assert await durably.get_workers_async() == []

    run(main())


def test_wait_for_run_async_times_out_and_validates(durably: Durably) -> None:
    @durably.job("idle")
    async def idle(step: AsyncStepContext, input: None) -> None:
        return None

    async def main() -> None:
        created = await idle.trigger_async(None)
        with pytest.raises(TimeoutError):
            await durably.wait_for_run_async(created.id, timeout=0.05)
        with pytest.raises(ValidationError):
            await durably.wait_for_run_async(created.id, timeout=-1)
        with pytest.raises(TimeoutError):
            await idle.trigger_and_wait_async(None, timeout=0.05)

    run(main())


def test_wait_for_run_async_does_not_block_the_loop(durably: Durably) -> None:
    @durably.job("slowish")
    def slowish(step: StepContext, input: None) -> str:
        return step.run("s", lambda: "cancelled" if step.wait(0.3) else "done")

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> Any:
        created = await slowish.trigger_async(None)
        durably.start()  # another engine (threads) does the work
        task = asyncio.create_task(ticker())
        try:
            return await durably.wait_for_run_async(created.id, timeout=WAIT)
        finally:
            task.cancel()
            await asyncio.to_thread(durably.stop)

    assert run(main()).output == "done"
    assert ticks >= 10  # the loop kept running while the wait was pending


@pytest.mark.parametrize(
    ("async_url", "sync_url"),
    [
        ("sqlite+aiosqlite:///{path}", "sqlite:///{path}"),
        ("sqlite+aiolibsql:///{path}", "sqlite+libsql:///{path}"),
    ],
    ids=["aiosqlite", "aiolibsql"],
)
def test_async_driver_spellings_reach_the_same_file(
    tmp_path: Any, async_url: str, sync_url: str
) -> None:
    path = tmp_path / "spelled.db"
    async_app = Durably(async_url.format(path=path), polling_interval=0.05)
    assert async_app.engine.url.get_driver_name() in ("pysqlite", "libsql")

    @async_app.job("ping")
    async def ping(step: AsyncStepContext, input: None) -> str:
        return "pong"

    async def main() -> Any:
        await async_app.migrate_async()
        created = await ping.trigger_async(None)
        assert await async_app.process_one_async()
        return created

    created = run(main())
    async_app.close()
    with Durably(sync_url.format(path=path)) as sync_app:
        assert sync_app.get_run(created.id).output == "pong"  # type: ignore[union-attr]


# -- the asyncio engine's slots ---------------------------------------------------


def test_a_busy_slot_claims_its_next_run_where_it_records_the_last_ones_end(
    make_durably: Callable[..., Durably], monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    if driver == "postgresql":
        pytest.skip(
            "SQLite only: PostgreSQL's claim takes its locks in a transaction of its own "
            "(durably.core.claim_postgresql), so it does not join the completion's write"
        )
    durably = make_durably(max_concurrent_runs=1)
    order: list[int] = []

    @durably.job("tick")
    async def tick(step: AsyncStepContext, input: dict[str, int]) -> int:
        order.append(input["n"])
        return input["n"]

    runs = tick.batch_trigger([{"n": n} for n in range(20)])
    db = testing.database(durably)
    real_write_batches = db.write_batches
    trips: list[list[str]] = []  # the statements' tables, per batch, per trip from the loop

    def counting(batches: Sequence[Batch]) -> list[list[Outcome] | Exception]:
        trips.append([_what(batch) for batch in batches])
        return real_write_batches(batches)

    monkeypatch.setattr(db, "write_batches", counting)

    async def main() -> None:
        await durably.start_async()
        try:
            for queued in runs:
                await durably.wait_for_run_async(queued.id, timeout=WAIT)
        finally:
            await durably.stop_async()

    run(main())
    assert order == list(range(20))  # one slot, first in first out
    assert [durably.get_run(r.id).status for r in runs] == [RunStatus.COMPLETED] * 20  # type: ignore[union-attr]
    # The claim loop claimed the first run, and claims again (finding nothing)
    # once the queue is empty; each later run was claimed in the round trip
    # that recorded the end of the one before it.
    completions = [trip for trip in trips if "complete" in trip]
    assert len(completions) == 20, trips
    assert all(trip == ["complete", "claim"] for trip in completions), trips
    assert len(trips) <= 20 + 5, trips


def _what(batch: Batch) -> str:
    """A batch of the asyncio engine's, by what its first statement does."""
    statement = batch[0][0]
    if statement is claim.claim_statement(frozenset({"tick"})):
        return "claim"
    if statement is lease_writes._COMPLETE_RUN:
        return "complete"
    return str(statement.table)


def test_a_slot_claims_nothing_more_once_the_worker_is_stopping(
    make_durably: Callable[..., Durably],
) -> None:
    durably = make_durably(max_concurrent_runs=1)
    release = asyncio.Event()

    @durably.job("gate")
    async def gate(step: AsyncStepContext, input: dict[str, int]) -> int:
        if input["n"] == 0:
            await release.wait()
        return input["n"]

    first, *rest = gate.batch_trigger([{"n": n} for n in range(3)])

    async def main() -> None:
        await durably.start_async()
        deadline = asyncio.get_running_loop().time() + WAIT
        while (await durably.get_run_async(first.id)).status is not RunStatus.LEASED:  # type: ignore[union-attr]
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(durably.stop_async())
        await asyncio.sleep(0.05)  # stop_async has begun: the worker is stopping
        release.set()
        await stopping

    run(main())
    assert durably.get_run(first.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
    assert [durably.get_run(r.id).status for r in rest] == [RunStatus.PENDING] * 2  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["async-step", "def-step"])
def test_a_database_error_storing_a_step_result_leaves_the_run_to_its_lease(
    make_durably: Callable[..., Durably], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """As for a ``def`` job: the job did nothing wrong, so the run is not failed.

    The step result is written from the event loop, and the error of that
    write reaches the step's decisions as it would in a thread.
    """
    durably = make_durably()

    async def doubled(n: int) -> int:
        return n * 2

    @durably.job("one-step")
    async def one_step(step: AsyncStepContext, input: int) -> int:
        if kind == "async-step":
            return await step.run("only", lambda: doubled(input))  # type: ignore[no-any-return]
        return await step.run("only", lambda: input * 2)  # type: ignore[no-any-return]

    attempts = refuse_first_step_write(testing.lease_service(durably), monkeypatch)
    errors: list[Event] = []
    durably.on("worker:error", errors.append)
    created = one_step.trigger(21)

    async def main() -> None:
        assert await durably.process_one_async()

    run(main())
    assert attempts == ["only"]
    after = durably.get_run(created.id)
    assert after is not None
    assert after.status is RunStatus.LEASED, after.error  # left to its lease, not failed
    assert [e.context for e in errors] == ["step-persist"]
