"""The test Hrana server (tests/hrana/server.py): protocol details over raw HTTP, then the
stock libsql client against it.

The server always runs as a separate process: the stock client keeps the GIL while it waits on
the network, so a server thread in this interpreter would deadlock.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hrana import process
from tests.hrana.process import Server, stop_server

TOKEN = "test-token"
JsonObj = dict[str, Any]


def start_server(tmp_path: Path, name: str, *extra: str, token: str | None = TOKEN) -> Server:
    return process.start_server(tmp_path, name, *extra, token=token)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hrana"), "main")
    try:
        yield srv
    finally:
        stop_server(srv.proc)
        assert srv.proc.returncode == 0, srv.trace_path.read_text()[-2000:]


@pytest.fixture(scope="module")
def short_expiry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hrana"), "expiry", "--stream-expiry", "1")
    try:
        yield srv
    finally:
        stop_server(srv.proc)


# -- raw HTTP helpers ----------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    srv: Server, method: str, path: str, body: Any = None, auth: str | None = "default"
) -> Response:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, method=method)
    if auth == "default" and srv.token is not None:
        req.add_header("Authorization", f"Bearer {srv.token}")
    elif auth not in (None, "default"):
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Response(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, err.headers.get("Content-Type", ""), err.read())


def pipeline(srv: Server, requests: list[JsonObj], baton: str | None = None, v: int = 3) -> JsonObj:
    resp = http(srv, "POST", f"/v{v}/pipeline", {"baton": baton, "requests": requests})
    assert resp.status == 200, resp.body
    assert resp.content_type == "application/json"
    out: JsonObj = resp.json()
    return out


def stmt(sql: str, *args: Any, **extra: Any) -> JsonObj:
    return {"sql": sql, "args": [value(a) for a in args], **extra}


def execute(sql: str, *args: Any) -> JsonObj:
    return {"type": "execute", "stmt": stmt(sql, *args)}


def value(v: Any) -> JsonObj:
    if v is None:
        return {"type": "null"}
    if isinstance(v, bool):
        raise TypeError(v)
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "text", "value": v}
    return {"type": "blob", "base64": base64.b64encode(v).decode()}


def ok(result: JsonObj) -> JsonObj:
    assert result["type"] == "ok", result
    response: JsonObj = result["response"]
    return response


def rows(result: JsonObj) -> list[list[JsonObj]]:
    out: list[list[JsonObj]] = ok(result)["result"]["rows"]
    return out


def err(result: JsonObj) -> JsonObj:
    assert result["type"] == "error", result
    error: JsonObj = result["error"]
    return error


# -- endpoints and auth --------------------------------------------------------------------------


def test_version_probes_and_routes(server: Server) -> None:
    for path in ("/v2", "/v3"):
        resp = http(server, "GET", path, auth=None)
        assert (resp.status, resp.body) == (200, b"Hello, this is HTTP API v2 (Hrana over HTTP)")
    assert http(server, "GET", "/health", auth=None).status == 200
    assert http(server, "GET", "/", auth=None).status == 404  # sqld: WebSocket upgrades only
    assert http(server, "GET", "/v3-protobuf", auth=None).status == 404  # JSON only
    assert http(server, "POST", "/v1/execute", {}).status == 404  # no Hrana 1 / HTTP v1
    assert http(server, "POST", "/v2/cursor", {}).status == 404  # cursors are Hrana 3
    assert http(server, "GET", "/v3/pipeline").status == 405


def test_auth_token_is_required(server: Server) -> None:
    body = {"baton": None, "requests": [execute("SELECT 1")]}
    for auth in (None, "Bearer wrong", f"Basic {TOKEN}", "garbage"):
        resp = http(server, "POST", "/v3/pipeline", body, auth=auth)
        assert resp.status == 401, auth
        assert resp.json()["error"].startswith("Unauthorized: ")
    assert (
        http(
            server, "POST", "/v3/cursor", {"baton": None, "batch": {"steps": []}}, auth=None
        ).status
        == 401
    )
    assert http(server, "POST", "/v3/pipeline", body).status == 200


# -- batons and streams ---------------------------------------------------------------------------


def test_baton_rotates_and_a_used_baton_is_rejected(server: Server) -> None:
    first = pipeline(server, [execute("SELECT 1")])
    b1 = first["baton"]
    assert isinstance(b1, str)
    assert first["base_url"] is None
    b2 = pipeline(server, [execute("SELECT 2")], b1)["baton"]
    assert b2 not in (None, b1)

    reused = http(server, "POST", "/v3/pipeline", {"baton": b1, "requests": [execute("SELECT 1")]})
    assert (reused.status, reused.content_type) == (400, "text/plain")
    assert reused.body == b"Received a baton that has already been used"
    forged = http(server, "POST", "/v3/pipeline", {"baton": b2[:-2] + "AA", "requests": []})
    assert (forged.status, forged.body) == (400, b"Received an invalid baton")

    # neither error consumed the stream: b2 still works, then `close` ends it
    closed = pipeline(server, [execute("SELECT 3"), {"type": "close"}], b2)
    assert closed["baton"] is None
    assert ok(closed["results"][1]) == {"type": "close"}
    gone = http(server, "POST", "/v3/pipeline", {"baton": b2, "requests": []})  # stream gone
    assert (gone.status, gone.body) == (400, b"Received an invalid baton")


def test_concurrent_requests_on_one_baton(server: Server) -> None:
    b = pipeline(server, [execute("SELECT 1")])["baton"]
    slow = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000000) SELECT count(*) FROM c"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(pipeline, server, [execute(slow)], b)
        time.sleep(0.15)
        second = http(
            server, "POST", "/v3/pipeline", {"baton": b, "requests": [execute("SELECT 2")]}
        )
        assert not first.done()  # the stream is busy: the second request was refused at once
        assert (second.status, second.body) == (400, b"Received a baton that has already been used")
        res = first.result()
    assert rows(res["results"][0]) == [[{"type": "integer", "value": "2000000"}]]
    assert pipeline(server, [{"type": "close"}], res["baton"])["baton"] is None


def test_server_restart_invalidates_batons(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "restart", token=None)
    try:
        b = pipeline(srv, [execute("SELECT 1")])["baton"]
    finally:
        stop_server(srv.proc)
    again = start_server(tmp_path, "restart", "--port", str(srv.port), token=None)
    try:
        resp = http(again, "POST", "/v3/pipeline", {"baton": b, "requests": [execute("SELECT 1")]})
        assert (resp.status, resp.body) == (400, b"Received an invalid baton")
    finally:
        stop_server(again.proc)


def test_requests_after_close_in_one_pipeline_fail_the_request(server: Server) -> None:
    body = {"baton": None, "requests": [{"type": "close"}, execute("SELECT 1")]}
    resp = http(server, "POST", "/v3/pipeline", body)
    assert (resp.status, resp.body) == (400, b"Stream for this baton was closed")


def test_write_transaction_spans_requests_and_uses_wal(server: Server) -> None:
    b = pipeline(server, [execute("CREATE TABLE tx (id INTEGER PRIMARY KEY, v TEXT)")])["baton"]
    res = pipeline(server, [execute("BEGIN"), execute("INSERT INTO tx (v) VALUES ('a')")], b)
    b = res["baton"]
    res = pipeline(server, [{"type": "get_autocommit"}, execute("SELECT count(*) FROM tx")], b)
    assert ok(res["results"][0]) == {"type": "get_autocommit", "is_autocommit": False}
    assert rows(res["results"][1]) == [[{"type": "integer", "value": "1"}]]
    b = res["baton"]

    other = pipeline(server, [execute("SELECT count(*) FROM tx"), {"type": "close"}])
    assert rows(other["results"][0]) == [[{"type": "integer", "value": "0"}]]  # not committed

    res = pipeline(server, [execute("COMMIT"), {"type": "get_autocommit"}], b)
    assert ok(res["results"][1])["is_autocommit"] is True
    with sqlite3.connect(server.db) as check:
        assert check.execute("SELECT count(*) FROM tx").fetchone() == (1,)
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_many_streams_concurrently(server: Server) -> None:
    pipeline(server, [execute("CREATE TABLE conc (n INTEGER)"), {"type": "close"}])

    def worker(n: int) -> int:
        b = None
        for i in range(5):
            b = pipeline(server, [execute("INSERT INTO conc VALUES (?)", n * 100 + i)], b)["baton"]
        return len(
            rows(
                pipeline(server, [execute("SELECT * FROM conc"), {"type": "close"}], b)["results"][
                    0
                ]
            )
        )

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(worker, range(8)))
    assert all(c >= 5 for c in counts)
    final = pipeline(server, [execute("SELECT count(*) FROM conc"), {"type": "close"}])
    assert rows(final["results"][0]) == [[{"type": "integer", "value": "40"}]]


def test_idle_stream_expires_and_rolls_back(short_expiry_server: Server) -> None:
    srv = short_expiry_server
    pipeline(srv, [execute("CREATE TABLE exp (v INTEGER)"), {"type": "close"}])
    b = pipeline(srv, [execute("BEGIN"), execute("INSERT INTO exp VALUES (1)")])["baton"]
    kept = pipeline(srv, [execute("SELECT 1")], b)["baton"]  # each request resets the timer
    time.sleep(2.5)
    resp = http(srv, "POST", "/v3/pipeline", {"baton": kept, "requests": [execute("COMMIT")]})
    assert resp.status == 500
    assert resp.json() == {
        "message": "The stream has expired due to inactivity",
        "code": "STREAM_EXPIRED",
    }
    # rolled back, and the write lock is free again right away
    t0 = time.monotonic()
    res = pipeline(srv, [execute("INSERT INTO exp VALUES (2)"), execute("SELECT v FROM exp")])
    assert time.monotonic() - t0 < 1
    assert rows(res["results"][1]) == [[{"type": "integer", "value": "2"}]]


# -- requests -------------------------------------------------------------------------------------


def test_unknown_request_type_is_a_protocol_error(server: Server) -> None:
    b = pipeline(server, [execute("SELECT 1")])["baton"]
    resp = http(server, "POST", "/v3/pipeline", {"baton": b, "requests": [{"type": "frobnicate"}]})
    assert (resp.status, resp.content_type) == (400, "text/plain")
    assert b"unknown variant `frobnicate`" in resp.body
    # the body was rejected before the stream was touched: the baton is still good
    assert pipeline(server, [{"type": "close"}], b)["baton"] is None


def test_value_setting_pragmas_and_connection_state_are_refused(server: Server) -> None:
    refused = [
        "PRAGMA journal_mode=DELETE",
        "PRAGMA busy_timeout = 100",
        "PRAGMA synchronous=OFF",
        "PRAGMA main.journal_mode = MEMORY",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "VACUUM",
        "ANALYZE",
        "CREATE TEMP TABLE tt (x)",
        "ATTACH DATABASE 'x.db' AS x",
    ]
    allowed = ["PRAGMA journal_mode", "PRAGMA busy_timeout", "PRAGMA foreign_keys=ON"]
    res = pipeline(server, [execute(sql) for sql in refused + allowed] + [{"type": "close"}])
    for sql, result in zip(refused, res["results"], strict=False):
        error = err(result)
        assert error["code"] == "SQL_PARSE_ERROR", sql
        assert error["message"] == f"SQL string could not be parsed: unsupported statement: {sql}"
    journal, _, _ = res["results"][len(refused) : len(refused) + 3]
    assert rows(journal) == [[{"type": "text", "value": "wal"}]]
    assert all(r["type"] == "ok" for r in res["results"][len(refused) :])


def test_sql_errors(server: Server) -> None:
    res = pipeline(
        server,
        [
            execute("CREATE TABLE errs (x INTEGER UNIQUE)"),
            execute("INSERT INTO errs VALUES (1)"),
            execute("INSERT INTO errs VALUES (1)"),
            execute("SELECT nope FROM errs"),
            execute("SELEC 1"),
            execute("SELECT 1; SELECT 2"),
            execute("  -- nothing\n"),
            execute("SELECT ?, ?", 1),
            {
                "type": "execute",
                "stmt": {"sql": "SELECT :a", "named_args": [{"name": "a", "value": value(5)}]},
            },
            {"type": "close"},
        ],
    )
    r = res["results"]
    assert err(r[2]) == {
        "message": "SQLite error: UNIQUE constraint failed: errs.x",
        "code": "SQLITE_CONSTRAINT",
    }
    assert err(r[3]) == {
        "message": "SQL input error: no such column: nope (at offset 7)",
        "code": "SQL_INPUT_ERROR",
    }
    assert err(r[4])["code"] == "SQL_PARSE_ERROR"
    assert err(r[5])["code"] == "SQL_MANY_STATEMENTS"
    assert err(r[6])["code"] == "SQL_NO_STATEMENT"
    assert err(r[7])["code"] == "ARGS_INVALID"
    assert rows(r[8]) == [[{"type": "integer", "value": "5"}]]


def test_values_round_trip_exactly(server: Server) -> None:
    big = 2**62 + 1
    blob = bytes(range(256))
    res = pipeline(
        server,
        [
            execute("CREATE TABLE vals (i INTEGER, f REAL, t TEXT, b BLOB, n)"),
            execute(
                "INSERT INTO vals VALUES (?, ?, ?, ?, ?)", big, 1.5, "žluťoučký 🐎", blob, None
            ),
            execute("INSERT INTO vals (i) VALUES (?), (?)", -(2**63), 2**63 - 1),
            execute("SELECT i, f, t, b, n, typeof(i) FROM vals ORDER BY rowid"),
            execute("SELECT ?", 2**53 + 1),
            {"type": "close"},
        ],
    )
    r = res["results"]
    insert = ok(r[1])["result"]
    assert insert["affected_row_count"] == 1
    assert insert["last_insert_rowid"] == "1"  # a string
    assert ok(r[2])["result"]["affected_row_count"] == 2
    table = rows(r[3])
    assert table[0] == [
        {"type": "integer", "value": str(big)},
        {"type": "float", "value": 1.5},
        {"type": "text", "value": "žluťoučký 🐎"},
        {"type": "blob", "base64": base64.b64encode(blob).decode().rstrip("=")},
        {"type": "null"},
        {"type": "text", "value": "integer"},
    ]
    assert [row[0]["value"] for row in table[1:]] == [str(-(2**63)), str(2**63 - 1)]
    assert rows(r[4]) == [[{"type": "integer", "value": str(2**53 + 1)}]]
    cols = ok(r[3])["result"]["cols"]
    assert cols[:4] == [
        {"name": "i", "decltype": "INTEGER"},
        {"name": "f", "decltype": "REAL"},
        {"name": "t", "decltype": "TEXT"},
        {"name": "b", "decltype": "BLOB"},
    ]
    assert cols[5] == {"name": "typeof(i)", "decltype": None}
    # a 65-bit integer is not a valid Value
    too_big = {"baton": None, "requests": [execute("SELECT ?", 2**63)]}
    assert http(server, "POST", "/v3/pipeline", too_big).status == 400


def test_batch_conditions(server: Server) -> None:
    def step(sql: str, cond: JsonObj | None = None) -> JsonObj:
        return {"condition": cond, "stmt": stmt(sql)}

    def ok_(i: int) -> JsonObj:
        return {"type": "ok", "step": i}

    def error_(i: int) -> JsonObj:
        return {"type": "error", "step": i}

    steps = [
        step("SELECT 0"),  # 0 ok
        step("SELECT nope"),  # 1 error
        step("SELECT 2", ok_(0)),  # 2 runs
        step("SELECT 3", ok_(1)),  # 3 skipped
        step("SELECT 4", error_(1)),  # 4 runs
        step("SELECT 5", {"type": "not", "cond": ok_(1)}),  # 5 runs
        step("SELECT 6", {"type": "and", "conds": [ok_(0), error_(1)]}),  # 6 runs
        step("SELECT 7", {"type": "or", "conds": [ok_(1), ok_(3)]}),  # 7 skipped
        step("SELECT 8", {"type": "is_autocommit"}),  # 8 runs
        step("SELECT 9", error_(3)),  # 9 skipped: a skipped step is neither ok nor error
        step("SELECT 10", {"type": "and", "conds": []}),  # 10 runs
    ]
    res = pipeline(server, [{"type": "batch", "batch": {"steps": steps}}, {"type": "close"}])
    result = ok(res["results"][0])["result"]
    ran = [i for i, r in enumerate(result["step_results"]) if r is not None]
    failed = [i for i, e in enumerate(result["step_errors"]) if e is not None]
    assert ran == [0, 2, 4, 5, 6, 8, 10]
    assert failed == [1]

    # a condition may only look back
    bad = [step("SELECT 1", ok_(0))]
    resp = http(
        server,
        "POST",
        "/v3/pipeline",
        {"baton": None, "requests": [{"type": "batch", "batch": {"steps": bad}}]},
    )
    assert (resp.status, resp.body) == (400, b"Invalid reference to step in a batch condition")


def test_transactional_batch_rolls_back(server: Server) -> None:
    def step(sql: str, cond: JsonObj | None = None) -> JsonObj:
        return {"condition": cond, "stmt": stmt(sql)}

    steps = [
        step("BEGIN"),
        step("CREATE TABLE tb (x INTEGER UNIQUE)", {"type": "ok", "step": 0}),
        step("INSERT INTO tb VALUES (1), (1)", {"type": "ok", "step": 1}),
        step("COMMIT", {"type": "ok", "step": 2}),
        step("ROLLBACK", {"type": "not", "cond": {"type": "ok", "step": 3}}),
    ]
    res = pipeline(
        server, [{"type": "batch", "batch": {"steps": steps}}, {"type": "get_autocommit"}]
    )
    result = ok(res["results"][0])["result"]
    assert result["step_errors"][2]["code"] == "SQLITE_CONSTRAINT"
    assert result["step_results"][3] is None
    assert result["step_results"][4] is not None
    assert ok(res["results"][1])["is_autocommit"] is True
    res = pipeline(
        server,
        [execute("SELECT name FROM sqlite_master WHERE name = 'tb'"), {"type": "close"}],
        res["baton"],
    )
    assert rows(res["results"][0]) == []


def test_sequence_describe_and_stored_sql(server: Server) -> None:
    res = pipeline(
        server,
        [
            {
                "type": "sequence",
                "sql": "CREATE TABLE s1 (a INTEGER, b TEXT); CREATE TABLE s2 (c);",
            },
            {"type": "describe", "sql": "SELECT a AS x, b FROM s1 WHERE a = :a AND b = ?2"},
            {"type": "describe", "sql": "INSERT INTO s1 VALUES (?, ?)"},
            {"type": "store_sql", "sql_id": 7, "sql": "SELECT count(*) FROM s2"},
            {"type": "execute", "stmt": {"sql_id": 7}},
            {"type": "close_sql", "sql_id": 7},
            {"type": "sequence", "sql": "INSERT INTO s2 VALUES (1); INSERT INTO nope VALUES (1)"},
            {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM s2"}},
            {"type": "close"},
        ],
    )
    r = res["results"]
    assert ok(r[0]) == {"type": "sequence"}
    assert ok(r[1])["result"] == {
        "params": [{"name": ":a"}, {"name": "?2"}],
        "cols": [{"name": "x", "decltype": "INTEGER"}, {"name": "b", "decltype": "TEXT"}],
        "is_explain": False,
        "is_readonly": True,
    }
    assert ok(r[2])["result"]["is_readonly"] is False
    assert ok(r[2])["result"]["params"] == [{"name": None}, {"name": None}]
    assert rows(r[4]) == [[{"type": "integer", "value": "0"}]]
    assert ok(r[5]) == {"type": "close_sql"}
    # stops at the failing statement (SQLite gives no error offset here: no SQL_INPUT_ERROR)...
    assert err(r[6]) == {"message": "SQLite error: no such table: nope", "code": "SQLITE_UNKNOWN"}
    assert rows(r[7]) == [[{"type": "integer", "value": "1"}]]  # ...after running the first

    # a stored SQL text that was closed is a protocol error
    resp = http(
        server,
        "POST",
        "/v3/pipeline",
        {"baton": None, "requests": [{"type": "execute", "stmt": {"sql_id": 7}}]},
    )
    assert (resp.status, resp.body) == (400, b"SQL text 7 not found")


def test_hrana_2_pipeline(server: Server) -> None:
    res = pipeline(server, [execute("SELECT 1")], v=2)
    assert rows(res["results"][0]) == [[{"type": "integer", "value": "1"}]]
    resp = http(
        server,
        "POST",
        "/v2/pipeline",
        {"baton": res["baton"], "requests": [{"type": "get_autocommit"}]},
    )
    assert resp.status == 400
    assert b"only supported in protocol version hrana3" in resp.body


def test_cursor_streams_json_lines(server: Server) -> None:
    steps = [
        {"stmt": stmt("SELECT 1 AS a UNION ALL SELECT 2")},
        {"stmt": stmt("SELECT nope")},
        {"condition": {"type": "ok", "step": 1}, "stmt": stmt("SELECT 'skipped'")},
        {"condition": {"type": "error", "step": 1}, "stmt": stmt("SELECT ?", 2**62 + 1)},
    ]
    resp = http(server, "POST", "/v3/cursor", {"baton": None, "batch": {"steps": steps}})
    assert (resp.status, resp.content_type) == (200, "text/plain")
    lines = [json.loads(line) for line in resp.body.splitlines()]
    head, entries = lines[0], lines[1:]
    assert set(head) == {"baton", "base_url"}
    assert isinstance(head["baton"], str)
    one, two, big = (
        {"type": "integer", "value": "1"},
        {"type": "integer", "value": "2"},
        {"type": "integer", "value": str(2**62 + 1)},
    )
    assert entries == [
        {"type": "step_begin", "step": 0, "cols": [{"name": "a", "decltype": None}]},
        {"type": "row", "row": [one]},
        {"type": "row", "row": [two]},
        {"type": "step_end", "affected_row_count": 0, "last_insert_rowid": None},
        {
            "type": "step_error",
            "step": 1,
            "error": {
                "message": "SQL input error: no such column: nope (at offset 7)",
                "code": "SQL_INPUT_ERROR",
            },
        },
        {"type": "step_begin", "step": 3, "cols": [{"name": "?", "decltype": None}]},
        {"type": "row", "row": [big]},
        {"type": "step_end", "affected_row_count": 0, "last_insert_rowid": None},
    ]
    # the cursor's baton continues the stream
    assert pipeline(server, [{"type": "close"}], head["baton"])["baton"] is None


# -- the stock client -----------------------------------------------------------------------------


def test_stock_client(server: Server) -> None:
    libsql = pytest.importorskip("libsql_experimental")
    start = len(server.trace())
    conn = libsql.connect(database=server.url, auth_token=TOKEN)
    conn.execute("CREATE TABLE stock (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
    conn.commit()
    conn.execute("INSERT INTO stock (name, n) VALUES (?, ?)", ("a", 1))
    assert conn.in_transaction
    conn.commit()
    conn.execute("INSERT INTO stock (name, n) VALUES (?, ?)", ("b", 2))
    conn.rollback()
    cur = conn.execute("SELECT id, name, n FROM stock ORDER BY id")
    assert cur.fetchall() == [(1, "a", 1)]
    assert [d[0] for d in cur.description] == ["id", "name", "n"]
    assert conn.execute("SELECT ?", (b"\x00\xff",)).fetchall() == [(b"\x00\xff",)]
    # the client sends ints beyond 32 bits as floats; a literal stays exact
    assert conn.execute("SELECT 4611686018427387905").fetchall() == [(2**62 + 1,)]
    assert conn.execute("SELECT typeof(?)", (2**40,)).fetchall() == [("real",)]
    with pytest.raises(ValueError, match="SQLITE_CONSTRAINT"):
        conn.execute("INSERT INTO stock (id, name) VALUES (1, 'dup')")
    conn.rollback()
    with pytest.raises(ValueError, match="unsupported statement"):
        conn.execute("PRAGMA journal_mode=DELETE")  # described, then refused by the client
    conn.close()

    trace = server.trace()[start:]
    paths = {t["path"] for t in trace if "path" in t}
    assert paths == {"/v3/pipeline", "/v3/cursor"}
    requests = [r for t in trace for r in t.get("requests", [])]
    assert {"type": "describe", "sql": "INSERT INTO stock (name, n) VALUES (?, ?)"} in requests
    assert {"type": "batch", "steps": ["BEGIN;"]} in requests  # its own BEGIN before INSERT
    assert {"type": "describe", "sql": "PRAGMA journal_mode=DELETE"} in requests
    runs = [t for t in trace if t.get("path") == "/v3/cursor" or "batch" in json.dumps(t)]
    assert not any("journal_mode" in json.dumps(t) for t in runs)
    cursors = [t["steps"] for t in trace if t.get("path") == "/v3/cursor"]
    assert ["SELECT id, name, n FROM stock ORDER BY id"] in cursors


def test_stock_client_through_sqlalchemy(server: Server) -> None:
    pytest.importorskip("sqlalchemy_libsql")
    import sqlalchemy as sa

    engine = sa.create_engine(
        f"sqlite+libsql://127.0.0.1:{server.port}?secure=false", connect_args={"auth_token": TOKEN}
    )
    try:
        with engine.begin() as c:
            c.execute(sa.text("CREATE TABLE sa_items (id INTEGER PRIMARY KEY, v TEXT)"))
            c.execute(sa.text("INSERT INTO sa_items (v) VALUES (:v)"), [{"v": "x"}, {"v": "y"}])
        with engine.connect() as c:
            c.execute(sa.text("INSERT INTO sa_items (v) VALUES ('rolled back')"))
            c.rollback()
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT v FROM sa_items ORDER BY id")).scalars().all() == [
                "x",
                "y",
            ]
    finally:
        engine.dispose()


def test_stock_client_is_stuck_after_stream_expiry(short_expiry_server: Server) -> None:
    libsql = pytest.importorskip("libsql_experimental")
    conn = libsql.connect(database=short_expiry_server.url, auth_token=TOKEN)
    assert conn.execute("SELECT 1").fetchall() == [(1,)]  # a cursor leaves the stream open
    time.sleep(2.2)
    for _ in range(2):  # the client never drops the stale baton
        with pytest.raises(ValueError, match="STREAM_EXPIRED"):
            conn.execute("SELECT 1")
    fresh = libsql.connect(database=short_expiry_server.url, auth_token=TOKEN)
    assert fresh.execute("SELECT 2").fetchall() == [(2,)]
    fresh.close()
