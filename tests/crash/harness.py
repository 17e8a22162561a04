"""Worker processes, the side-effect log and the claim audit, for the crash suite.

Every test of the suite runs real ``durably worker tests.crash.jobs:durably``
processes (see :mod:`tests.crash.jobs`), triggers and reads runs from the test
process through a ``Durably`` client that runs no worker, and checks what the
workers did from two independent records:

* the side-effect log the workers append to (every step execution, with the
  lease it ran under, and every fenced write with its outcome);
* a claim audit kept by the database itself: a trigger on ``durably_runs``
  copies every claim (every change of ``lease_generation``) with the lease it
  replaced, so a test can prove that no claim ever took a lease that was
  still live.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Connection

from durably import Durably, testing
from durably.models import Run
from tests.faults import held_by_another_process

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.crash.jobs:durably"
URLS = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
WAIT = 60.0
"""Seconds a test waits for something that normally takes a moment (reached only on failure)."""


def url_for(driver: str, path: Path) -> str:
    """The URL of a local database file for ``driver`` ("sqlite" or "libsql").

    The shared ``driver`` fixture also yields "remote" (a libSQL server) and
    "postgresql": a test that needs a local file skips them. The crash suite's remote tests
    (test_remote.py) start their own server and pass its URL to ``Cluster``.
    """
    if driver == "postgresql":
        pytest.skip("SQLite only: the test is about SQLite's own files")
    if driver not in URLS:
        pytest.skip(f"a local-file crash test; {driver!r} databases: see test_remote.py")
    return URLS[driver].format(path=path)


def wait_for(
    predicate: Callable[[], object],
    what: str,
    timeout: float = WAIT,
    diagnostics: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            details = diagnostics() if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{details}")
        time.sleep(interval)


# -- /proc --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # Everything after "(comm)": field 3 (state) is index 0, utime (14) is 11, stime (15) is 12.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process (all its threads) has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_state(pid: int) -> str:
    """``R``, ``S``, ``T`` (stopped)... from /proc/<pid>/stat."""
    return _stat_fields(pid)[0]


# -- worker processes ------------------------------------------------------------------


class Worker:
    """One ``durably worker`` process, its output in a file."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path) -> None:
        self.process = process
        self.output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()  # SIGKILL also ends a stopped process
        self.process.wait(WAIT)

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


@dataclass(frozen=True)
class Claim:
    """One claim of a run, as recorded by the database trigger."""

    run_id: str
    old_status: str
    old_owner: str | None
    old_expires: int | None
    old_generation: int
    new_owner: str
    new_generation: int
    claimed_at: int


CLAIM_AUDIT = (
    """
    CREATE TABLE IF NOT EXISTS crash_claims (
        run_id TEXT, old_status TEXT, old_owner TEXT, old_expires INTEGER,
        old_generation INTEGER, new_owner TEXT, new_generation INTEGER, claimed_at INTEGER
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS crash_claim_audit AFTER UPDATE OF lease_generation
    ON durably_runs WHEN new.lease_generation <> old.lease_generation
    BEGIN
        INSERT INTO crash_claims VALUES (
            old.id, old.status, old.lease_owner, old.lease_expires_at,
            old.lease_generation, new.lease_owner, new.lease_generation, new.updated_at
        );
    END
    """,
)
POSTGRESQL_CLAIM_AUDIT = (
    """
    CREATE TABLE IF NOT EXISTS crash_claims (
        run_id TEXT, old_status TEXT, old_owner TEXT, old_expires BIGINT,
        old_generation INTEGER, new_owner TEXT, new_generation INTEGER, claimed_at BIGINT,
        seq BIGSERIAL
    )
    """,
    """
    CREATE OR REPLACE FUNCTION crash_claim_audit() RETURNS trigger AS $$
    BEGIN
        IF new.lease_generation <> old.lease_generation THEN
            INSERT INTO crash_claims (
                run_id, old_status, old_owner, old_expires, old_generation,
                new_owner, new_generation, claimed_at
            ) VALUES (
                old.id, old.status, old.lease_owner, old.lease_expires_at,
                old.lease_generation, new.lease_owner, new.lease_generation, new.updated_at
            );
        END IF;
        RETURN new;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE OR REPLACE TRIGGER crash_claim_audit AFTER UPDATE OF lease_generation
    ON durably_runs FOR EACH ROW EXECUTE FUNCTION crash_claim_audit()
    """,
)
"""The claim audit on PostgreSQL: a trigger calls a function there; rows ordered by ``seq``."""
_CLAIM_COLUMNS = (
    "run_id, old_status, old_owner, old_expires, old_generation, new_owner, new_generation, "
    "claimed_at"
)


class Cluster:
    """Worker processes on one database, a client, and what they recorded."""

    def __init__(
        self,
        directory: Path,
        driver: str,
        db_path: Path,
        *,
        db_url: str | None = None,
        **settings: str,
    ) -> None:
        """``db_url``: the URL the processes use, when it is not ``db_path``'s local
        URL for ``driver`` (a remote server serving ``db_path``)."""
        self.dir = directory
        self.driver = driver
        self.db_path = db_path
        self.db_url = db_url = db_url or url_for(driver, db_path)
        self.log = directory / "effects.log"
        self.log.touch()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "CRASH_DB_URL": db_url,
            "CRASH_LOG": str(self.log),
            "CRASH_DIR": str(directory),
            **settings,
        }
        self.workers: list[Worker] = []
        self._clients: list[Durably] = []

    # -- processes -------------------------------------------------------------------

    def start_worker(
        self,
        *args: str,
        engine: str = "thread",
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> Worker:
        """``durably worker tests.crash.jobs:durably --engine ENGINE ARGS...``."""
        output = self.dir / f"worker-{len(self.workers)}.out"
        command = ["-m", "durably", "worker", APP, "--engine", engine, *args]
        with output.open("wb") as out:
            process = subprocess.Popen(
                [*prefix, sys.executable, *command],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, output)
        self.workers.append(worker)
        return worker

    def client(self, **options: Any) -> Durably:
        """A ``Durably`` on the same database that triggers and reads, and runs no worker."""
        client = Durably(self.db_url, polling_interval=0.05, **options)
        for name in ("steps", "async-steps"):
            client.job(name)(_never_run)
        self._clients.append(client)
        return client

    def release(self) -> None:
        """Let every blocked step (``CRASH_BLOCK``) go on."""
        (self.dir / "release").touch()

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for client in self._clients:
            client.close()

    def diagnostics(self) -> str:
        parts = []
        for n, worker in enumerate(self.workers):
            state = "running" if worker.alive() else f"exit {worker.process.returncode}"
            parts.append(f"--- worker {n} (pid {worker.pid}, {state}):\n{worker.text()[-2500:]}")
        events = self.events()
        parts.append("--- last log lines:\n" + "\n".join(json.dumps(e) for e in events[-15:]))
        return "\n".join(parts)

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
        wait_for(predicate, what, timeout, self.diagnostics)

    # -- the side-effect log ---------------------------------------------------------------

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        """Every logged event (of these kinds), in the order they were appended."""
        # A line being appended right now may be read half-written: the text after
        # the last newline is left for the next read.
        lines = self.log.read_text().split("\n")[:-1]
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if not kinds or e["event"] in kinds]

    def wait_for_event(self, kind: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """The first logged ``kind`` event whose fields equal ``match``, waiting for it."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [
                e for e in self.events(kind) if all(e.get(k) == v for k, v in match.items())
            ]
            return bool(found)

        self.wait_for(seen, f"a {kind!r} event matching {match}", timeout)
        return found[0]

    # -- the claim audit ----------------------------------------------------------------------

    def install_claim_audit(self, client: Durably) -> None:
        postgresql = client.engine.dialect.name == "postgresql"

        def install(conn: Connection) -> None:
            for statement in POSTGRESQL_CLAIM_AUDIT if postgresql else CLAIM_AUDIT:
                conn.exec_driver_sql(statement)

        write(client, install)

    def claims(self, client: Durably) -> list[Claim]:
        order = "seq" if client.engine.dialect.name == "postgresql" else "rowid"
        rows = query(client, f"SELECT {_CLAIM_COLUMNS} FROM crash_claims ORDER BY {order}")
        return [Claim(*row) for row in rows]


def write(client: Durably, fn: Callable[[Connection], T]) -> T:
    """``fn(conn)`` in a write transaction of the client's, retried while the file is locked."""
    return testing.database(client).write(fn)


def query(client: Durably, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only SQL statement (durably's read transaction, retried while locked)."""
    return testing.database(client).read(lambda conn: [tuple(r) for r in conn.exec_driver_sql(sql)])


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def lock_held(db_path: Path) -> Iterator[None]:
    """Another process holds the database's write lock (``BEGIN EXCLUSIVE``) until exit.

    The holder uses the stdlib ``sqlite3`` in its own process whatever the test's
    driver: two drivers must never open one file in the same process, and
    across processes SQLite and libSQL honour each other's locks.
    """
    with held_by_another_process(LOCK_HOLDER, str(db_path), ready="locked", timeout=WAIT):
        yield


def prefix_enforcing_file_modes(tmp_path: Path) -> list[str]:
    """A command prefix that starts a process unable to write a read-only file.

    Empty when not root; as root, ``unprivileged.py``. Skips the test when even
    that cannot be arranged.
    """
    if os.geteuid() != 0:
        return []
    prefix = [sys.executable, str(ROOT / "tests" / "crash" / "unprivileged.py")]
    probe = tmp_path / "read-only-probe"
    probe.write_text("")
    probe.chmod(0o444)
    result = subprocess.run(
        [*prefix, sys.executable, "-c", f"open({str(probe)!r}, 'r+')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0 or "PermissionError" not in result.stderr:
        pytest.skip(f"cannot start a process that obeys file modes here: {result.stdout}")
    return prefix


def trigger_mixed(client: Durably, count: int, steps: int, chunk: int) -> list[Run]:
    """``count`` runs, alternating every ``chunk`` runs between the ``def`` job and the
    ``async def`` job (``n`` is the run's position)."""
    runs: list[Run] = []
    for start in range(0, count, chunk):
        job = client.get_job(("steps", "async-steps")[start // chunk % 2])
        assert job is not None
        inputs = [{"n": n, "steps": steps} for n in range(start, min(start + chunk, count))]
        runs.extend(job.batch_trigger(inputs))
    return runs


def _never_run(step: Any, input: Any) -> None:
    raise AssertionError("the client registers jobs only to trigger them")


def assert_claims_exclusive(claims: Iterable[Claim], runs: Iterable[Run]) -> None:
    """No claim took a live lease, and each run's claims are generations 1, 2, 3..."""
    generations: dict[str, list[int]] = defaultdict(list)
    for claim in claims:
        live = claim.old_status == "leased" and (
            claim.old_expires is None or claim.old_expires > claim.claimed_at
        )
        assert not live, f"claimed while another worker's lease was live: {claim}"
        assert claim.new_generation == claim.old_generation + 1, claim
        generations[claim.run_id].append(claim.new_generation)
    for run in runs:
        assert generations[run.id] == list(range(1, run.lease_generation + 1)), run.id


def by_run(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        grouped[event["run"]].append(event)
    return grouped


def stop_all(workers: Iterable[Worker], timeout: float = WAIT) -> None:
    """SIGTERM every live worker and wait for it to exit."""
    live = [w for w in workers if w.alive()]
    for worker in live:
        worker.signal(signal.SIGTERM)
    for worker in live:
        worker.wait(timeout)


def assert_every_step_ran_once_under_one_lease(
    cluster: Cluster, client: Durably, runs: Sequence[Run], names: Sequence[str]
) -> dict[str, Run]:
    """Proves that competing workers which never lost a lease ran everything exactly once.

    Checks, after every run of ``runs`` (jobs with steps ``names``) completed with
    nothing killed and leases far longer than anything takes:

    * every run completed, claimed once (lease generation 1), with the output of
      one worker: ``{"n": ..., "results": ["s1@PID", ...], "finished_by": PID}``;
    * the database's claim audit holds one claim per run, none of a live lease;
    * every step of every run was started exactly once, under the run's only lease
      (its owner, generation 1, the process that finished the run);
    * each step result and each completion was written once and never refused, and
      the database stores each step once, completed, under generation 1.

    Returns the final state of every run, by id.
    """
    done = {run.id: run for run in client.get_runs(limit=None)}
    assert len(done) == len(runs)
    for run in runs:
        final = done[run.id]
        assert final.status == "completed"
        assert final.lease_generation == 1, "claimed once: no lease ever expired or was taken"
        pid = final.output["finished_by"]
        assert final.output == {
            "n": run.input["n"],
            "results": [f"{name}@{pid}" for name in names],
            "finished_by": pid,
        }

    # The database's own record of every claim: one per run, none took a live lease.
    claims = cluster.claims(client)
    assert len(claims) == len(runs)
    assert_claims_exclusive(claims, done.values())
    owner = {claim.run_id: claim.new_owner for claim in claims}

    # Every step of every run executed exactly once, under the run's only lease.
    starts = cluster.events("start")
    assert Counter((e["run"], e["step"]) for e in starts) == {
        (run.id, name): 1 for run in runs for name in names
    }
    for run_id, executions in by_run(starts).items():
        assert {(e["owner"], e["gen"], e["pid"]) for e in executions} == {
            (owner[run_id], 1, done[run_id].output["finished_by"])
        }
    # Each step result and each completion was written once, and no write was refused.
    assert Counter((e["run"], e["step"], e["ok"]) for e in cluster.events("persist")) == {
        (run.id, name, True): 1 for run in runs for name in names
    }
    assert Counter((e["run"], e["ok"]) for e in cluster.events("complete")) == {
        (run.id, True): 1 for run in runs
    }
    stored = query(client, "SELECT run_id, name, status, lease_generation FROM durably_steps")
    assert Counter(stored) == {(run.id, name, "completed", 1): 1 for run in runs for name in names}
    return done


def assert_nothing_lost_and_no_stored_step_rerun(
    cluster: Cluster, client: Durably, runs: Sequence[Run], names: Sequence[str], context: str
) -> tuple[dict[str, Run], dict[tuple[str, int], list[str]]]:
    """Proves that interrupted claims (killed workers, lost leases) lost and re-ran nothing
    but the step in progress.

    Checks, after every run of ``runs`` (jobs with steps ``names``) completed:

    * no run lost: every run completed, with its input's ``n`` and one result per
      step, in order; every step stored once, completed;
    * no stored step re-run: a step stored by claim ``g`` of a run was never started
      by a later claim, and no claim started a step twice;
    * the stored result is the run's result for that step, computed by the one
      execution (``name@pid``) of the claim that stored it;
    * at most one unfinished step per interrupted claim: each claim that did not
      finish its run started at most one step whose result it did not store;
    * no claim took a live lease (the database's claim audit).

    ``context`` is added to the failure messages. Returns the final state of every
    run by id, and the steps each interrupted claim, ``(run id, generation)``, left
    unstored.
    """
    done: dict[str, Run] = {}
    stored: dict[tuple[str, str], tuple[int, Any]] = {}
    for run in runs:
        final = client.get_run(run.id)
        assert final is not None, f"run {run.id} lost ({context})"
        assert final.status == "completed", (final, context)
        assert final.output["n"] == run.input["n"], context
        assert [r.split("@")[0] for r in final.output["results"]] == list(names), (final, context)
        done[run.id] = final
        for step in client.get_steps(run.id):
            assert step.status == "completed", (step, context)
            assert (run.id, step.name) not in stored, f"{step.name} stored twice ({context})"
            stored[run.id, step.name] = (step.lease_generation, step.output)
    assert set(stored) == {(run.id, name) for run in runs for name in names}, context

    starts = cluster.events("start")
    executions: Counter[tuple[str, str, int]] = Counter(
        (e["run"], e["step"], e["gen"]) for e in starts
    )
    unfinished: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (run_id, name, gen), count in executions.items():
        stored_by, _output = stored[run_id, name]
        assert count == 1, f"{name} started {count} times by one claim ({context})"
        assert gen <= stored_by, (
            f"run {run_id}: {name} was stored by claim {stored_by} and run again by "
            f"claim {gen} ({context})"
        )
        if gen < stored_by:
            unfinished[run_id, gen].append(name)
    for (run_id, name), (stored_by, output) in stored.items():
        assert executions[run_id, name, stored_by] == 1, (run_id, name, context)
        # The value the run finished with is the one stored, computed by that execution.
        (execution,) = [
            e for e in starts if (e["run"], e["step"], e["gen"]) == (run_id, name, stored_by)
        ]
        assert output == f"{name}@{execution['pid']}", context
        assert done[run_id].output["results"][names.index(name)] == output, context
    for (run_id, gen), left in unfinished.items():
        # Interrupted by a kill, or (on a starved machine) by a lease lost meanwhile.
        assert len(left) == 1, (
            f"run {run_id}: claim {gen} left {left} unstored; only the step in progress "
            f"when it was interrupted may be ({context})"
        )
    assert_claims_exclusive(cluster.claims(client), done.values())
    return done, dict(unfinished)
