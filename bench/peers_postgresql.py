"""W1 and W2 of the peers that run on PostgreSQL: DBOS and procrastinate.

Each measurement runs in a fresh process (``python -m bench.peers_postgresql
PEER WORKLOAD URL COUNT CAP``, one JSON line out), on a database of its own
on the bench's server (bench/postgres.py), whose ``synchronous_commit``
follows the case's setting as durably's does. Both run 4 at a time and the
same work per run as durably's three-step job:

* **DBOS**: a workflow of three ``@DBOS.step()`` functions, enqueued one by
  one with ``DBOSClient`` on a queue with ``worker_concurrency=4``, as on SQLite;
* **procrastinate** (a task queue, no steps): three tasks chained, each
  deferring the next once its own result is computed, so each of the three
  results is a committed job, as each of durably's steps is a committed row;
  a worker with ``concurrency=4``; later tasks of a chain have a higher
  priority. W1 defers the first task one call at a time.

Completion is read from each peer's own tables with plain psycopg.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from .apps import STEPS, inputs
from .peers import POLL, QUEUE, dbos_workload, in_process, measured
from .postgres import connect, conninfo

PEERS = ("dbos", "procrastinate")


def measure(peer: str, workload: str, url: str, count: int, cap: float) -> dict[str, float]:
    """Run one measurement in a fresh process; returns ``{"count", "seconds", "planned"}``."""
    args = [peer, workload, url, str(count), str(cap)]
    return in_process("bench.peers_postgresql", args, timeout=cap + 300)


def _counter(url: str, sql: str) -> Callable[[], int]:
    watch = connect(url)

    def count() -> int:
        return int(watch.execute(sql).fetchone()[0])

    return count


# -- DBOS ---------------------------------------------------------------------


def _dbos(workload: str, url: str, count: int, cap: float) -> dict[str, float]:
    completed = _counter(url, "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'")
    return dbos_workload(workload, count, cap, {"system_database_url": url}, completed)


# -- procrastinate -------------------------------------------------------------


def _procrastinate(workload: str, url: str, count: int, cap: float) -> dict[str, float]:
    import procrastinate
    from psycopg.conninfo import make_conninfo

    connector = procrastinate.PsycopgConnector(conninfo=make_conninfo(**conninfo(url)))
    app = procrastinate.App(connector=connector)
    chain: list[Any] = []

    def make(index: int, name: str) -> Any:
        @app.task(name=name, queue=QUEUE)
        async def task(n: int) -> dict[str, Any]:
            result = {"n": n, "step": name}  # the step's "work"
            if index + 1 < len(chain):
                # A later task of the chain goes first (priority), so runs complete one
                # by one as durably's do, not all their first tasks before any second.
                await chain[index + 1].configure(priority=index + 1).defer_async(n=n)
            return result

        return task

    chain.extend(make(index, name) for index, name in enumerate(STEPS))
    return asyncio.run(_procrastinate_main(app, chain[0], workload, url, count, cap))


async def _procrastinate_main(
    app: Any, first: Any, workload: str, url: str, count: int, cap: float
) -> dict[str, float]:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        if workload == "w1":
            started = time.perf_counter()
            done = 0
            for item in inputs(count):
                await first.defer_async(n=item["n"])
                done += 1
                if time.perf_counter() - started > cap:
                    break
            return measured(done, time.perf_counter() - started, count)
        await first.batch_defer_async(*inputs(count))
        import psycopg

        watch = await psycopg.AsyncConnection.connect(**conninfo(url), autocommit=True)
        sql = (
            f"SELECT count(*) FROM procrastinate_jobs WHERE task_name = '{STEPS[-1]}' "
            "AND status = 'succeeded'"
        )

        async def completed() -> int:
            row = await (await watch.execute(sql)).fetchone()
            return int(row[0]) if row else 0

        started = time.perf_counter()
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE], concurrency=4, wait=True, install_signal_handlers=False
            )
        )
        deadline = started + cap
        while (done := await completed()) < count and time.perf_counter() < deadline:
            await asyncio.sleep(POLL)
        elapsed = time.perf_counter() - started
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await watch.close()
        return measured(done, elapsed, count)


RUNNERS = {"dbos": _dbos, "procrastinate": _procrastinate}


def main(argv: list[str]) -> int:
    peer, workload, url, count, cap = argv[1:6]
    result = RUNNERS[peer](workload, url, int(count), float(cap))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
