"""durably's Hrana driver (durably/hrana) against the test server: values, errors, transactions,
lost streams, auth, and that it lets other threads run while it waits.

The server runs as a separate process (tests/hrana/process.py); every assertion about what went
over the wire reads the server's --trace output.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from durably import Disposition, Durably, RunStatus, testing
from durably.errors import DatabaseError, ValidationError
from durably.hrana import dbapi
from durably.storage.urls import make_engine_url, url_from_env
from tests.hrana.process import REPO, Server, start_server

T = TypeVar("T")

TOKEN = "driver-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "driver", token=TOKEN)
    yield srv
    srv.stop()


@pytest.fixture
def short_expiry(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "expiry", "--stream-expiry", "0.5", token=TOKEN)
    yield srv
    srv.stop()


def connect(srv: Server, **options: float) -> dbapi.Connection:
    return dbapi.connect(srv.url, auth_token=TOKEN, **options)


def pipelines(srv: Server) -> list[dict[str, object]]:
    return [e for e in srv.trace() if e.get("path") == "/v3/pipeline" and "requests" in e]


def sent_sql(entry: dict[str, object]) -> str:
    return " | ".join(str(r) for r in entry["requests"])  # type: ignore[attr-defined]


# -- values and errors ------------------------------------------------------------------------


def test_values_round_trip_exactly(server: Server) -> None:
    values = [
        2**53 + 1,
        2**63 - 1,
        -(2**63),
        0,
        1.5,
        -0.25,
        "héllo ✓",
        "",
        b"",
        b"\x00\xff",
        b"abc",
        b"abcd",
        None,
    ]
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE v (x)")
        cur.executemany("INSERT INTO v VALUES (?)", [(v,) for v in values])
        assert cur.rowcount == len(values)
        rows = cur.execute("SELECT x, typeof(x) FROM v ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == values
    assert [r[1] for r in rows][:4] == ["integer"] * 4


def test_an_integer_beyond_64_bits_is_refused_before_sending(server: Server) -> None:
    with closing(connect(server)) as conn, pytest.raises(dbapi.DataError, match="64 bits"):
        conn.cursor().execute("SELECT ?", (2**63,))
    assert pipelines(server) == []


def test_sql_errors_map_to_dbapi_exceptions(server: Server) -> None:
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE u (k TEXT UNIQUE)")
        cur.execute("INSERT INTO u VALUES ('a')")
        with pytest.raises(dbapi.IntegrityError, match=r"UNIQUE constraint failed: u\.k"):
            cur.execute("INSERT INTO u VALUES ('a')")
        with pytest.raises(dbapi.ProgrammingError):
            cur.execute("SELEC 1")
        with pytest.raises(dbapi.OperationalError, match="no such table"):
            cur.execute("SELECT * FROM missing")
        # the connection is still usable after each error
        assert cur.execute("SELECT count(*) FROM u").fetchone() == (1,)


def test_executemany_stops_at_the_first_failing_row(server: Server) -> None:
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE u (k TEXT UNIQUE)")
        with pytest.raises(dbapi.IntegrityError):
            cur.executemany("INSERT INTO u VALUES (?)", [("a",), ("a",), ("b",)])
        assert cur.execute("SELECT k FROM u").fetchall() == [("a",)]


# -- transactions -------------------------------------------------------------------------------


def test_begin_travels_with_the_first_statement_and_commit_is_one_more_request(
    server: Server,
) -> None:
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (x INTEGER)")
        before = len(pipelines(server))
        cur.execute("BEGIN IMMEDIATE")
        assert conn.in_transaction
        cur.execute("INSERT INTO t VALUES (1)")
        cur.execute("INSERT INTO t VALUES (2)")
        conn.commit()
        assert not conn.in_transaction
        sent = pipelines(server)[before:]
    assert len(sent) == 3  # BEGIN+INSERT, INSERT, COMMIT: no describe, no separate BEGIN
    assert "BEGIN IMMEDIATE" in sent_sql(sent[0])
    assert "INSERT" in sent_sql(sent[0])
    assert "COMMIT" in sent_sql(sent[2])
    with closing(sqlite3.connect(server.db)) as check:
        assert check.execute("SELECT x FROM t").fetchall() == [(1,), (2,)]


def test_a_transaction_with_no_statement_sends_nothing(server: Server) -> None:
    with closing(connect(server)) as conn:
        conn.cursor().execute("BEGIN IMMEDIATE")
        conn.commit()
        conn.cursor().execute("BEGIN")
        conn.rollback()
    assert pipelines(server) == []


def test_a_refused_begin_immediate_never_runs_its_statement_outside_a_transaction(
    tmp_path: Path,
) -> None:
    srv = start_server(tmp_path, "busy", "--busy-timeout", "100", token=TOKEN)
    try:
        with closing(connect(srv)) as holder, closing(connect(srv)) as other:
            holder.cursor().execute("CREATE TABLE t (x INTEGER)")
            holder.cursor().execute("BEGIN IMMEDIATE")
            holder.cursor().execute("INSERT INTO t VALUES (1)")
            other.cursor().execute("BEGIN IMMEDIATE")
            with pytest.raises(dbapi.OperationalError, match=r"locked|SQLITE_BUSY"):
                other.cursor().execute("INSERT INTO t VALUES (2)")
            assert not other.in_transaction
            holder.rollback()
            other.rollback()
            assert other.cursor().execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        srv.stop()


def test_sqlalchemy_transactions_commit_and_roll_back(server: Server) -> None:
    engine = sa.create_engine(f"sqlite+hrana://127.0.0.1:{server.port}?auth_token={TOKEN}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with engine.connect() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            conn.rollback()
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT x FROM t").scalars().all() == [2]
            assert engine.dialect.server_version_info is not None
            assert engine.dialect.server_version_info >= (3, 35)
    finally:
        engine.dispose()


def test_a_whole_transaction_in_one_request_applies_all_or_nothing(server: Server) -> None:
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (x INTEGER)")
        cur.execute("CREATE TABLE u (k TEXT UNIQUE)")
        before = len(pipelines(server))
        results = conn.execute_transaction(
            [("INSERT INTO t VALUES (?)", [1]), ("INSERT INTO u VALUES (?)", ["a"])]
        )
        assert [r.affected_row_count for r in results] == [1, 1]
        with pytest.raises(dbapi.IntegrityError, match="UNIQUE"):
            conn.execute_transaction(
                [("INSERT INTO t VALUES (?)", [2]), ("INSERT INTO u VALUES (?)", ["a"])]
            )
        assert not conn.in_transaction
        sent = pipelines(server)[before:]
        assert len(sent) == 2  # one request per transaction
        steps = sent[0]["requests"][0]["steps"]  # type: ignore[index]
        assert steps[0] == "BEGIN IMMEDIATE"
        assert steps[-2:] == ["COMMIT", "ROLLBACK"]
        assert cur.execute("SELECT x FROM t").fetchall() == [(1,)]  # the failed one left nothing


def test_durably_stores_a_step_result_in_one_request(server: Server) -> None:
    with Durably(server.libsql_url, auth_token=TOKEN) as durably:

        @durably.job("two-steps")
        def two_steps(step: object, input: object) -> int:
            step.run("a", lambda: 1)  # type: ignore[attr-defined]
            return int(step.run("b", lambda: 2))  # type: ignore[attr-defined]

        durably.migrate()
        run = two_steps.trigger({})
        before = len(pipelines(server))
        assert durably.process_one()
        assert durably.get_run(run.id).output == 2  # type: ignore[union-attr]
    writes = [
        e["requests"][0]["steps"]  # type: ignore[index]
        for e in pipelines(server)[before:]
        if "INSERT INTO durably_steps" in sent_sql(e)
    ]
    assert len(writes) == 2
    for steps in writes:
        assert steps[0] == "BEGIN IMMEDIATE"
        assert steps[-2:] == ["COMMIT", "ROLLBACK"]


def test_a_trigger_without_keys_is_one_request(server: Server) -> None:
    # A killed app process cannot leave a half-made trigger holding the write lock.
    with Durably(server.libsql_url, auth_token=TOKEN) as durably:
        job = durably.job("noop")(lambda step, input: None)
        durably.migrate()
        before = len(pipelines(server))
        run = job.trigger({"n": 1}, labels={"tenant": "a", "kind": "b"})
        sent = pipelines(server)[before:]
        assert len(sent) == 1
        assert sent[0]["requests"][0]["steps"][0] == "BEGIN IMMEDIATE"  # type: ignore[index]
        stored = durably.get_runs(labels={"tenant": "a", "kind": "b"})
        assert [r.id for r in stored] == [run.id]
        assert stored[0] == run


# -- lost streams -------------------------------------------------------------------------------


def test_an_expired_idle_stream_is_replaced_transparently(short_expiry: Server) -> None:
    # stream_idle is long, so the driver reuses the expired baton and must recover.
    with closing(connect(short_expiry, stream_idle=60)) as conn:
        cur = conn.cursor()
        assert cur.execute("SELECT 1").fetchone() == (1,)
        time.sleep(1.5)
        assert cur.execute("SELECT 2").fetchone() == (2,)
    errors = [e for e in short_expiry.trace() if e.get("status") == 500]
    assert errors
    assert "expired" in str(errors[0]["error"])


def test_a_stream_lost_inside_a_transaction_raises_and_keeps_nothing(short_expiry: Server) -> None:
    with closing(connect(short_expiry, stream_idle=60)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (x INTEGER)")
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("INSERT INTO t VALUES (1)")
        time.sleep(1.5)
        with pytest.raises(dbapi.TransactionLost, match="rolled back"):
            cur.execute("INSERT INTO t VALUES (2)")
        assert not conn.in_transaction
        # the connection goes on, on a new stream, without the lost transaction
        assert cur.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_server_restart_is_survived_between_transactions(server: Server) -> None:
    with closing(connect(server)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (x INTEGER)")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO t VALUES (1)")
        server.kill()
        restarted = server.restart()
        try:
            with pytest.raises(dbapi.OperationalError):
                cur.execute("INSERT INTO t VALUES (2)")
            assert not conn.in_transaction
            cur.execute("INSERT INTO t VALUES (3)")
            assert cur.execute("SELECT x FROM t").fetchall() == [(3,)]
        finally:
            restarted.stop()


def test_durably_retries_a_transaction_the_server_dropped(short_expiry: Server) -> None:
    """A write whose stream expired mid-transaction is rolled back whole, so durably reruns it."""
    calls = 0

    def slow_write(conn: sa.Connection) -> None:
        nonlocal calls
        calls += 1
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        if calls == 1:
            time.sleep(1.5)  # the stream expires while the transaction is open
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")

    with Durably(short_expiry.libsql_url, auth_token=TOKEN) as durably:
        db = testing.database(durably)
        db.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
        db.write(slow_write)
        assert calls == 2
        assert db.read(lambda c: c.exec_driver_sql("SELECT x FROM t").scalars().all()) == [1, 2]


# -- connection problems --------------------------------------------------------------------------


def test_wrong_token_unreachable_host_and_wrong_path_are_clear_errors(server: Server) -> None:
    with pytest.raises(dbapi.AuthenticationError, match="auth token"):
        dbapi.connect(server.url, auth_token="wrong").cursor().execute("SELECT 1")
    with pytest.raises(dbapi.OperationalError, match="cannot reach") as refused:
        dbapi.connect("http://127.0.0.1:1").cursor().execute("SELECT 1")
    assert refused.value.executed is False
    with pytest.raises(dbapi.OperationalError, match="does not serve Hrana"):
        dbapi.connect(server.url + "/nope", auth_token=TOKEN).cursor().execute("SELECT 1")

    with pytest.raises(DatabaseError, match="refused the auth token"):
        Durably(server.libsql_url, auth_token="wrong").migrate()
    with pytest.raises(DatabaseError, match="cannot reach"):
        Durably("sqlite+libsql://127.0.0.1:1").migrate()


def test_the_token_in_the_url_goes_into_the_authorization_header(server: Server) -> None:
    with Durably(f"sqlite+libsql://127.0.0.1:{server.port}?authToken={TOKEN}") as durably:
        durably.migrate()
    trace = server.trace()
    assert not [e for e in trace if "query" in e]  # never sent as a query parameter
    assert not [e for e in trace if e.get("status") == 401]


def test_other_threads_run_while_the_driver_waits_for_the_server(tmp_path: Path) -> None:
    """The stock client keeps the GIL during network waits; this driver must not."""
    srv = start_server(tmp_path, "gil", "--busy-timeout", "1000", token=TOKEN)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    try:
        with closing(connect(srv)) as holder, closing(connect(srv)) as waiter:
            holder.cursor().execute("CREATE TABLE t (x INTEGER)")
            holder.cursor().execute("BEGIN IMMEDIATE")
            holder.cursor().execute("INSERT INTO t VALUES (1)")
            counter = threading.Thread(target=count)
            counter.start()
            waiter.cursor().execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(dbapi.OperationalError):
                waiter.cursor().execute("INSERT INTO t VALUES (2)")  # waits ~1 s on the server
            waited = time.monotonic() - started
            during = ticks
            stop.set()
            counter.join()
            holder.rollback()
        assert waited >= 0.9
        # a 1 ms sleeper ticks hundreds of times per second when it can run at all
        assert during > 100
    finally:
        stop.set()
        srv.stop()


# -- URLs and the environment -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+libsql://db.example.com", "sqlite+hrana://db.example.com"),
        ("sqlite+libsql://h:8080?secure=true", "sqlite+hrana://h:8080?secure=true"),
        ("libsql://my-db.turso.io", "sqlite+hrana://my-db.turso.io?secure=true"),
        ("https://my-db.turso.io", "sqlite+hrana://my-db.turso.io?secure=true"),
        ("http://127.0.0.1:8080", "sqlite+hrana://127.0.0.1:8080?secure=false"),
        ("sqlite+aiolibsql://h", "sqlite+hrana://h"),
        ("sqlite+libsql:///local.db", "sqlite+libsql:///local.db"),
    ],
)
def test_remote_urls_pick_durablys_driver(url: str, expected: str) -> None:
    assert make_engine_url(url).render_as_string(hide_password=False) == expected


def test_a_token_in_the_url_is_never_shown() -> None:
    durably = Durably("sqlite+libsql://h:1?secure=false&auth_token=s3cret")
    assert "s3cret" not in repr(durably)
    assert "h:1" in repr(durably)


def test_url_from_env_prefers_durably_then_turso() -> None:
    turso = {"TURSO_DATABASE_URL": "libsql://t.turso.io", "TURSO_AUTH_TOKEN": "tt"}
    assert url_from_env(turso) == ("libsql://t.turso.io", "tt")
    both = {**turso, "DURABLY_DATABASE_URL": "sqlite:///local.db"}
    assert url_from_env(both) == ("sqlite:///local.db", None)  # a file takes no token
    remote = {**turso, "DURABLY_DATABASE_URL": "libsql://d", "DURABLY_AUTH_TOKEN": "dt"}
    assert url_from_env(remote) == ("libsql://d", "dt")
    assert url_from_env({}, "sqlite:///default.db") == ("sqlite:///default.db", None)
    with pytest.raises(ValidationError, match="DURABLY_DATABASE_URL"):
        url_from_env({})
    with pytest.raises(ValidationError, match="auth_token is only used"):
        Durably("sqlite:///x.db", auth_token="t")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_migrate_a_remote_database_from_the_cli_and_with_alembic(server: Server) -> None:
    turso = {"TURSO_DATABASE_URL": server.url, "TURSO_AUTH_TOKEN": TOKEN}
    migrated = _run([sys.executable, "-m", "durably", "migrate"], turso)
    assert migrated.returncode == 0, migrated.stderr
    assert TOKEN not in migrated.stdout
    alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
    env = {"DURABLY_DATABASE_URL": server.libsql_url, "DURABLY_AUTH_TOKEN": TOKEN}
    again = _run(alembic, env)
    assert again.returncode == 0, again.stderr
    wrong = _run(alembic, {**env, "DURABLY_AUTH_TOKEN": "wrong"})
    assert wrong.returncode != 0
    assert "auth token" in wrong.stderr
    with Durably(server.libsql_url, auth_token=TOKEN) as durably:
        assert durably.process_one() is False  # the schema check passes


# -- keep-alive connections the server closed -----------------------------------------------------


class ClosingProxy:
    """Forwards each HTTP request to the server, then closes the client's connection without
    saying so (no ``Connection: close``), as a server or load balancer does with an idle
    keep-alive connection. The client's next request on that connection fails unanswered."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarded = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client:
                request = _read_http_message(client)
                if request is None:
                    continue
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                    upstream.sendall(request)
                    response = _read_http_message(upstream)
                self.forwarded += 1
                if response is not None:
                    client.sendall(response)

    def close(self) -> None:
        self.listener.close()


def _read_http_message(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_closed_keep_alive_connection_resends_only_what_cannot_commit(server: Server) -> None:
    proxy = ClosingProxy(server.port)
    try:
        with closing(dbapi.connect(f"http://127.0.0.1:{proxy.port}", auth_token=TOKEN)) as conn:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (x INTEGER)")  # the proxy then drops the connection
            # Opening a transaction commits nothing, so it is sent again on a new connection.
            cur.execute("BEGIN IMMEDIATE")
            cur.execute("INSERT INTO t VALUES (1)")
            assert conn.in_transaction
            # A COMMIT may have been applied when no answer comes: it is never resent.
            with pytest.raises(dbapi.OperationalError, match="lost the connection") as lost:
                conn.commit()
            assert lost.value.executed is None
            assert lost.value.connection_lost
        assert proxy.forwarded == 2  # CREATE, then BEGIN+INSERT once; the COMMIT never arrived
    finally:
        proxy.close()
    with closing(sqlite3.connect(server.db, timeout=15)) as check:
        # Nothing was committed.
        assert check.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_every_write_of_the_run_api_is_one_request(server: Server) -> None:
    # Nothing an app process does holds the write lock across round trips, so
    # a process killed mid-call leaves no transaction open on the server.
    def write_requests(action: Callable[[], T]) -> tuple[T, list[str]]:
        """What ``action`` returned, and each request it sent that wrote or locked."""
        before = len(pipelines(server))
        result = action()
        writing = [
            sql
            for sql in map(sent_sql, pipelines(server)[before:])
            if re.search(r"\b(BEGIN IMMEDIATE|INSERT|UPDATE|DELETE)\b", sql)
        ]
        for sql in writing:  # the whole transaction travels in one request
            assert "BEGIN IMMEDIATE" in sql
            assert "COMMIT" in sql
        return result, writing

    with Durably(server.libsql_url, auth_token=TOKEN) as durably:
        job = durably.job("noop")(lambda step, input: None)
        durably.migrate()

        run, writing = write_requests(
            lambda: job.trigger({}, idempotency_key="i", concurrency_key="c", labels={"a": "b"})
        )
        assert len(writing) == 1
        assert durably.get_runs(labels={"a": "b"}) == [run]
        same, writing = write_requests(lambda: job.trigger({}, idempotency_key="i"))
        assert (same.id, same.disposition, len(writing)) == (run.id, Disposition.IDEMPOTENT, 1)
        coalesced, writing = write_requests(
            lambda: job.trigger({}, concurrency_key="c", coalesce="skip")
        )
        assert (coalesced.id, coalesced.disposition, len(writing)) == (
            run.id,
            Disposition.COALESCED,
            1,
        )

        cancelled, writing = write_requests(lambda: durably.cancel(run.id))
        assert (cancelled.status, len(writing)) == (RunStatus.CANCELLED, 1)
        retried, writing = write_requests(lambda: durably.retry(run.id))
        assert (retried.status, len(writing)) == (RunStatus.PENDING, 1)
        durably.cancel(run.id)
        _, writing = write_requests(lambda: durably.delete_run(run.id))
        assert len(writing) == 1
        assert durably.get_run(run.id) is None

        old = job.trigger({})
        durably.cancel(old.id)
        purged, writing = write_requests(
            lambda: durably.purge_runs(datetime.now(timezone.utc) + timedelta(hours=1))
        )
        assert (purged, len(writing)) == (1, 1)
        assert durably.get_run(old.id) is None
