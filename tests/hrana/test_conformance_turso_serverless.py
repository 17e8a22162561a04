"""The real ``turso-serverless`` (PyPI, pinned in the ``dev`` extra) against the test server.

A pure-Python DB-API client written by Turso for their SQL-over-HTTP protocol (Hrana 3): every
statement is a ``/v3/cursor`` batch with a trailing step gated on ``is_autocommit``;
``executescript`` and ``close`` go through ``/v3/pipeline`` with a ``get_autocommit``. It opens a
new TCP connection per request, so it runs in this process without trouble (the server runs in
its own). Every expectation is what sqld answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib.metadata import version

import pytest
import turso_serverless

from tests.hrana.conformance import EXPIRY_SECONDS, TOKEN, requests_seen
from tests.hrana.process import Server


def test_the_pinned_version_is_installed() -> None:
    assert version("turso-serverless").startswith("0.1.")


@pytest.fixture(scope="module")
def db(conformance_server: Server) -> Iterator[turso_serverless.Connection]:
    conn = turso_serverless.connect(conformance_server.url, auth_token=TOKEN)
    conn.executescript(
        "CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB);"
        "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
    )
    yield conn
    conn.close()


def other(server: Server) -> turso_serverless.Connection:
    return turso_serverless.connect(server.url, auth_token=TOKEN)


def count(conn: turso_serverless.Connection, where: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {where}").fetchone()[0])


def test_values_round_trip_exactly(db: turso_serverless.Connection) -> None:
    cur = db.execute(
        "INSERT INTO vals(i, f, s, b) VALUES (?, ?, ?, ?)",
        (2**53 + 1, 1.5, "héllo ☃", b"\x00\x01\xfe\xff"),
    )
    assert cur.rowcount == 1
    rowid = cur.lastrowid
    db.commit()
    cur = db.execute("SELECT i, f, s, b, typeof(i) FROM vals WHERE id = ?", (rowid,))
    assert [d[0] for d in cur.description] == ["i", "f", "s", "b", "typeof(i)"]
    assert cur.fetchall() == [(2**53 + 1, 1.5, "héllo ☃", b"\x00\x01\xfe\xff", "integer")]
    edges = db.execute("SELECT ?, ?, ?, ?, ?", (2**63 - 1, -(2**63), None, b"", True)).fetchone()
    assert edges == (2**63 - 1, -(2**63), None, b"", 1)


def test_named_arguments(db: turso_serverless.Connection) -> None:
    row = db.execute("SELECT :a, :b, typeof(:b)", {"a": "x", "b": 2.0}).fetchone()
    assert row == ("x", 2.0, "real")


def test_implicit_transactions_commit_and_roll_back(
    db: turso_serverless.Connection, conformance_server: Server
) -> None:
    watcher = other(conformance_server)
    db.execute("INSERT INTO kv VALUES ('t1', 1)")  # sends BEGIN DEFERRED first, like sqlite3
    assert db.in_transaction
    assert count(watcher, "kv WHERE k = 't1'") == 0
    db.commit()
    assert not db.in_transaction
    assert count(watcher, "kv WHERE k = 't1'") == 1

    db.executemany("INSERT INTO kv VALUES (?, ?)", [("t2", 2), ("t3", 3)])
    assert count(db, "kv WHERE k IN ('t2', 't3')") == 2
    db.rollback()
    assert count(db, "kv WHERE k IN ('t2', 't3')") == 0
    watcher.close()


def test_explicit_immediate_transaction_without_implicit_begin(conformance_server: Server) -> None:
    conn = turso_serverless.connect(conformance_server.url, auth_token=TOKEN, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE kv SET v = v + 1 WHERE k = 't1'")
    assert conn.in_transaction
    conn.execute("COMMIT")
    assert count(conn, "kv WHERE k = 't1' AND v = 2") == 1
    conn.close()


def test_closing_rolls_back(conformance_server: Server) -> None:
    conn = other(conformance_server)
    conn.execute("INSERT INTO kv VALUES ('c1', 1)")
    conn.close()
    assert count(other(conformance_server), "kv WHERE k = 'c1'") == 0


def test_errors(db: turso_serverless.Connection) -> None:
    with pytest.raises(turso_serverless.IntegrityError, match=r"UNIQUE constraint failed: kv\.k"):
        db.execute("INSERT INTO kv VALUES ('t1', 9)")
    db.rollback()
    with pytest.raises(turso_serverless.OperationalError, match="no such table: missing"):
        db.execute("SELECT * FROM missing")
    with pytest.raises(turso_serverless.OperationalError, match="value for parameter 2 not found"):
        db.execute("SELECT ?, ?", (1,))
    # sqld checks a cursor's statements before it answers: one it cannot parse fails the
    # whole HTTP request (500 with an "Internal Error" body)
    with pytest.raises(turso_serverless.OperationalError, match="HTTP status 500: Internal Error"):
        db.execute("SELEC 1")
    with pytest.raises(turso_serverless.OperationalError, match="unsupported statement: VACUUM"):
        db.execute("VACUUM")
    with pytest.raises(turso_serverless.IntegrityError, match="UNIQUE"):
        db.executescript("INSERT INTO kv VALUES ('s1', 1); INSERT INTO kv VALUES ('t1', 1);")
    assert count(db, "kv WHERE k = 's1'") == 1  # a script runs statement by statement


def test_an_expired_stream_is_raised_once_then_replaced(conformance_server: Server) -> None:
    conn = other(conformance_server)
    conn.execute("INSERT INTO kv VALUES ('x1', 1)")
    assert conn.in_transaction
    time.sleep(EXPIRY_SECONDS * 2 + 0.5)
    with pytest.raises(
        turso_serverless.OperationalError,
        match="HTTP status 500: The stream has expired due to inactivity",
    ):
        conn.execute("SELECT 1")
    assert not conn.in_transaction
    assert count(conn, "kv WHERE k = 'x1'") == 0  # the server rolled the transaction back
    conn.close()


def test_a_wrong_token_is_refused(conformance_server: Server) -> None:
    conn = turso_serverless.connect(conformance_server.url, auth_token="wrong-token")
    with pytest.raises(turso_serverless.OperationalError, match="HTTP status 401: Unauthorized"):
        conn.execute("SELECT 1")


def test_it_speaks_hrana_3_and_sends_these_requests(conformance_server: Server) -> None:
    conn = other(conformance_server)
    assert conn.execute("SELECT 1").fetchall() == [(1,)]
    conn.close()
    assert requests_seen(conformance_server) == {
        ("/v3/cursor", "batch"),
        ("/v3/cursor", "condition"),
        ("/v3/pipeline", "sequence"),
        ("/v3/pipeline", "get_autocommit"),
        ("/v3/pipeline", "close"),
    }
