"""The real ``@libsql/client`` (npm, pinned in tests/hrana/clients) against the test server.

A server and a client written by the same hands can share a misunderstanding; this client was
written by Turso against sqld. Over HTTP it speaks Hrana 2 on ``/v2/pipeline`` only (its JSON
``/v3`` path is commented out in its source, and the test server has no Protobuf endpoint).
Every expectation below is what sqld (libsql-server) answers, read from its source.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.hrana.conformance import (
    big,
    blob,
    error,
    pinned_version,
    requests_seen,
    run_script,
)
from tests.hrana.process import Server


@pytest.fixture(scope="module")
def seen(conformance_server: Server) -> dict[str, Any]:
    assert pinned_version("@libsql/client").startswith("0.18.")
    return run_script("libsql_client.mjs", conformance_server)


def test_it_speaks_hrana_2_and_sends_these_requests(
    seen: dict[str, Any], conformance_server: Server
) -> None:
    assert "error" not in seen["schema"]
    assert requests_seen(conformance_server) == {
        ("/v2/pipeline", "execute"),
        ("/v2/pipeline", "batch"),
        ("/v2/pipeline", "sequence"),  # executeMultiple
        ("/v2/pipeline", "store_sql"),  # its SQL cache, in batches and transactions
        ("/v2/pipeline", "close_sql"),  # evicted from that cache
        ("/v2/pipeline", "close"),
    }


def test_values_round_trip_exactly(seen: dict[str, Any]) -> None:
    assert seen["schema"] == [["kv"], ["tx"], ["vals"]]
    insert = seen["values_positional"]["insert"]
    assert insert["rowsAffected"] == 1
    assert insert["lastInsertRowid"] == big(1)
    select = seen["values_positional"]["select"]
    assert select["columns"][:6] == ["id", "i", "f", "s", "b", "n"]
    assert select["columnTypes"][:6] == ["INTEGER", "INTEGER", "REAL", "TEXT", "BLOB", "ANY"]
    values = [big(1), big(2**53 + 1), 1.5, "héllo ☃", blob(b"\x00\x01\xfe\xff"), None]
    assert select["rows"] == [[*values, "integer", "real", "blob", "null"]]
    top, bottom = big(2**63 - 1), big(-(2**63))
    assert seen["values_edge_integers"] == [[top, bottom, big(0), top, bottom]]
    assert seen["values_empty_blob_and_text"] == [[blob(b""), "", "blob", 0]]


def test_named_arguments_bind_by_name_with_any_prefix(seen: dict[str, Any]) -> None:
    named = seen["values_named"]
    assert named["columns"] == ["a", "b", "c", "d", "e", "te"]
    # a JS number is sent as a float: 7 arrives as 7.0 (typeof real), as on sqld
    assert named["rows"] == [[big(-(2**63)), "x", None, 0.25, 7, "real"]]


def test_an_integer_beyond_2_53_is_refused_in_number_mode(seen: dict[str, Any]) -> None:
    assert error(seen["values_number_mode_overflow"])["name"] == "RangeError"


def test_rows_affected_and_last_insert_rowid(seen: dict[str, Any]) -> None:
    shapes = seen["result_shapes"]
    assert shapes["update"]["rowsAffected"] == 2
    assert shapes["delete"]["rowsAffected"] == 1
    # sqld sends last_insert_rowid only for INSERT: the client then leaves it out
    assert "lastInsertRowid" not in shapes["update"]
    assert shapes["select"]["rows"] == [["a", big(1)], ["b", big(12)]]
    assert shapes["select"]["rowsAffected"] == 0


def test_batches_are_atomic(seen: dict[str, Any]) -> None:
    written = seen["batch_write"]
    assert [r["rowsAffected"] for r in written] == [1, 1, 0]
    assert written[2]["rows"] == [["bw1", 1], ["bw2", 2]]

    failed = seen["batch_error_rolls_back"]
    assert error(failed["failed"])["name"] == "LibsqlBatchError"
    assert error(failed["failed"])["code"] == "SQLITE_CONSTRAINT"
    assert error(failed["failed"])["statementIndex"] == 1
    assert failed["after"] == failed["before"]  # the first insert was rolled back with it

    assert seen["batch_deferred_and_read"] == {"deferred": [[], [[1]]], "read": [[[1]]]}
    step = error(seen["batch_error_step_index"])
    assert (step["code"], step["statementIndex"]) == ("SQLITE_UNKNOWN", 1)


def test_read_transactions_are_not_read_only_on_sqld(seen: dict[str, Any]) -> None:
    """``transaction("read")`` and ``batch(..., "read")`` send ``BEGIN TRANSACTION READONLY``.

    SQLite parses that as a deferred transaction *named* READONLY. sqld does the same: its
    parser classifies it as a plain ``BEGIN`` and libSQL's C library maps even ``BEGIN
    READONLY`` to DEFERRED (libsql-sqlite3/src/parse.y); tursodatabase/libsql issues 839 and
    1555, still open, report that writes in such a transaction succeed. So a write in it is
    committed, here as on sqld: a "read" transaction is no guard against writes.
    """
    assert seen["batch_read_with_write"]["result"]["ok"][0]["rowsAffected"] == 1
    assert seen["batch_read_with_write"]["stored"] == 1
    read = seen["transaction_read"]
    assert read["read"] == [[read["read"][0][0]]]
    assert read["write"]["ok"]["rowsAffected"] == 1
    assert read["stored"] == 1


def test_interactive_transactions(seen: dict[str, Any]) -> None:
    assert seen["transaction_write_commit"] == {
        "inside": [["w1"]],
        "outsideBefore": 0,  # not visible to another stream before COMMIT
        "outsideAfter": 1,
        "closed": True,
    }
    assert seen["transaction_rollback"] == {"inside": [[2]], "after": 0, "closed": True}
    kept = seen["transaction_error_keeps_transaction"]
    assert error(kept["failed"])["code"] == "SQLITE_CONSTRAINT"
    assert kept["after"] == 2  # the failed statement did not end the transaction
    assert seen["transaction_deferred"] == {"stored": 1}
    assert seen["transaction_execute_multiple"] == {"stored": 0}
    assert error(seen["transaction_closed_use"])["code"] == "TRANSACTION_CLOSED"
    assert seen["transaction_sql_cache"] == {"values": [*range(35), 0], "longLength": 6000}


def test_errors_carry_sqld_codes(seen: dict[str, Any]) -> None:
    errors = {name: error(outcome) for name, outcome in seen["errors"].items()}
    assert {name: e["code"] for name, e in errors.items()} == {
        "syntax": "SQL_PARSE_ERROR",
        "no_table": "SQLITE_UNKNOWN",
        "unique": "SQLITE_CONSTRAINT",
        "not_null": "SQLITE_CONSTRAINT",
        "many": "SQL_MANY_STATEMENTS",
        "empty": "SQL_NO_STATEMENT",
        "missing_arg": "ARGS_INVALID",
        "unsupported": "SQL_PARSE_ERROR",
        "runtime": "SQLITE_UNKNOWN",
    }
    assert "syntax error" in errors["syntax"]["message"]
    assert "unsupported statement: VACUUM" in errors["unsupported"]["message"]
    assert "UNIQUE constraint failed: kv.k" in errors["unique"]["message"]
    assert "no such table: missing_table" in errors["no_table"]["message"]


def test_migrate_runs_with_foreign_keys_off_then_on(seen: dict[str, Any]) -> None:
    assert seen["migrate"] == {"results": [0, 1], "rows": 1, "fk": [[0]]}


def test_an_expired_stream_is_reported_and_rolled_back(seen: dict[str, Any]) -> None:
    expired = seen["stream_expiry"]
    first = error(expired["after"])
    assert first["code"] == "STREAM_EXPIRED"
    assert first["message"] == "STREAM_EXPIRED: The stream has expired due to inactivity"
    assert error(expired["again"])["code"] == "TRANSACTION_CLOSED"
    assert expired["closed"] is True
    assert expired["fresh"] == 0  # the open transaction's insert was rolled back


def test_a_wrong_or_missing_token_is_refused(seen: dict[str, Any]) -> None:
    for name in ("auth_rejected", "auth_missing"):
        refused = error(seen[name])
        assert refused["code"] == "SERVER_ERROR", name
        assert "401" in refused["message"], name
    assert seen["auth_accepted"] == [[1]]
