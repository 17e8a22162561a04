"""The real ``@tursodatabase/serverless`` (npm, pinned in tests/hrana/clients) against the test
server: Turso's fetch-based client, a second and independent Hrana 3 client. Every statement
goes through ``/v3/cursor`` with a trailing step gated on ``is_autocommit`` (how it tracks
transactions); ``exec`` (a ``sequence``), ``prepare`` (a ``describe``) and ``close`` go through
``/v3/pipeline`` with a ``get_autocommit``. Every expectation is what sqld answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.hrana.conformance import big, blob, error, pinned_version, requests_seen, run_script
from tests.hrana.process import Server


@pytest.fixture(scope="module")
def seen(conformance_server: Server) -> dict[str, Any]:
    assert pinned_version("@tursodatabase/serverless").startswith("1.4.")
    return run_script("serverless.mjs", conformance_server)


def test_it_speaks_hrana_3_and_sends_these_requests(
    seen: dict[str, Any], conformance_server: Server
) -> None:
    assert "error" not in seen["schema"]
    assert requests_seen(conformance_server) == {
        ("/v3/cursor", "batch"),
        ("/v3/cursor", "condition"),  # is_autocommit, ok, not, and
        ("/v3/pipeline", "sequence"),
        ("/v3/pipeline", "describe"),
        ("/v3/pipeline", "get_autocommit"),
        ("/v3/pipeline", "close"),
    }


def test_values_round_trip_exactly(seen: dict[str, Any]) -> None:
    assert seen["schema"] == [{"name": "kv"}, {"name": "tx"}, {"name": "vals"}]
    positional = seen["values_positional"]
    assert positional["run"] == {"changes": 1, "lastInsertRowid": 1}
    assert positional["row"] == {
        "id": big(1),
        "i": big(2**53 + 1),
        "f": 1.5,
        "s": "héllo ☃",
        "b": blob(b"\x00\x01\xfe\xff"),
        "n": None,
        "ti": "integer",
        "tf": "real",
        "tb": "blob",
    }
    assert seen["values_named"] == {"a": big(-(2**63)), "b": "x", "c": None, "d": 0.25}
    assert seen["values_edge_integers"] == {
        "hi": big(2**63 - 1),
        "lo": big(-(2**63)),
        "lit": big(2**63 - 1),
    }


def test_prepare_reads_columns_from_describe(seen: dict[str, Any]) -> None:
    prepared = seen["prepare_describe"]
    assert prepared["columns"] == [{"name": "k", "type": "TEXT"}, {"name": "v", "type": "INTEGER"}]
    assert prepared["reader"] is True
    assert prepared["all"] == [{"k": "p2", "v": 2}]
    assert prepared["raw"] == [["p1", 1], ["p2", 2]]
    described = error(seen["prepare_describe_error"])
    assert described["code"] == "SQLITE_UNKNOWN"
    assert "no such table: missing_table" in described["message"]


def test_changes_and_last_insert_rowid(seen: dict[str, Any]) -> None:
    shapes = seen["result_shapes"]
    assert shapes["insert"]["changes"] == 3
    assert isinstance(shapes["insert"]["lastInsertRowid"], int)
    # sqld sends last_insert_rowid only for INSERT
    assert shapes["update"] == {"changes": 2}
    assert shapes["del"] == {"changes": 1}


def test_batches_plain_and_atomic(seen: dict[str, Any]) -> None:
    plain = seen["batch_plain"]
    assert [r["rowsAffected"] for r in plain] == [1, 1, 0]
    assert plain[2] == {
        "columns": ["k", "v"],
        "rows": [{"k": "bp1", "v": 1}, {"k": "bp2", "v": 2}],
        "rowsAffected": 0,
    }
    # no mode: each step autocommits, so the first insert stays
    assert error(seen["batch_plain_error"]["failed"])["code"] == "SQLITE_CONSTRAINT"
    assert seen["batch_plain_error"]["stored"] == 1
    # a mode: BEGIN, steps on `ok` conditions, COMMIT, ROLLBACK on `and`/`not`: all or nothing
    atomic = seen["batch_atomic_error"]
    assert error(atomic["failed"])["code"] == "SQLITE_CONSTRAINT"
    assert atomic["stored"] == 0
    assert atomic["inTransaction"] is False
    assert seen["batch_atomic_ok"] == {"rows": [[], [{"v": 1}]], "inTransaction": False}


def test_transactions(seen: dict[str, Any]) -> None:
    assert seen["transaction_commit"] == {
        "inside": [{"k": "w1"}],
        "outsideBefore": 0,
        "outsideAfter": 1,
    }
    rolled_back = seen["transaction_rollback_on_throw"]
    assert error(rolled_back["thrown"])["message"] == "give up"
    assert rolled_back["stored"] == 0
    # get_autocommit follows a BEGIN sent as plain SQL on the connection's own stream
    assert seen["raw_begin_in_transaction"] == {"during": True, "after": False, "stored": 0}


def test_errors(seen: dict[str, Any]) -> None:
    errors = {
        name: error(outcome) for name, outcome in seen["errors"].items() if name != "after_errors"
    }
    assert errors["no_table"]["code"] == "SQLITE_UNKNOWN"
    assert errors["unique"]["code"] == "SQLITE_CONSTRAINT"
    assert errors["missing_arg"]["code"] == "ARGS_INVALID"
    assert errors["sequence"]["code"] == "SQLITE_CONSTRAINT"
    # sqld checks a cursor's statements before it answers: one it cannot parse or refuses
    # fails the whole HTTP request (500), and this client reports only the status
    for name in ("syntax", "many", "unsupported"):
        assert errors[name] == {"name": "_DatabaseError", "message": "HTTP error! status: 500"}
    # a sequence runs statement by statement, each in autocommit: the first one stays
    assert seen["errors"]["after_errors"] == {"n": 1}


def test_an_expired_stream_is_reported_then_replaced(seen: dict[str, Any]) -> None:
    expired = seen["stream_expiry"]
    # on /v3/cursor the client reads the message of sqld's JSON error (not its code)
    assert error(expired["after"])["message"] == "The stream has expired due to inactivity"
    assert expired["inTransaction"] is False
    assert expired["next"] == {"ok": {"n": 0}}  # a new stream; the open transaction was rolled back
    on_pipeline = seen["stream_expiry_pipeline"]
    assert error(on_pipeline["after"])["message"] == "HTTP error! status: 500"
    assert on_pipeline["next"] == {"ok": None}
    assert error(seen["close_then_use"])["name"] == "TypeError"


def test_the_libsql_compatible_client(seen: dict[str, Any]) -> None:
    compat = seen["compat_client"]
    assert compat["execute"] == {"columns": ["a", "b"], "rows": [[2**53 - 1, 2]]}
    # compat sends {a: 1} as a positional argument; sqld binds `:a` by name only
    named = error(compat["named"])
    assert named["code"] == "ARGS_INVALID"
    assert named["message"].endswith("value for parameter :a not found")
    assert compat["batch"] == [[], [{"v": 1}]]
    assert compat["rolledBack"] == 0
    # its transaction("read") is a plain BEGIN: writes go through, as with @libsql/client
    assert compat["readWrite"] == "ok"
    assert compat["readStored"] == 1


def test_a_wrong_token_is_refused(seen: dict[str, Any]) -> None:
    refused = seen["auth_rejected"]
    assert error(refused["run"])["message"] == "HTTP error! status: 401"
    assert error(refused["exec"])["message"] == "HTTP error! status: 401"
