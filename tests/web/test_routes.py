"""The Durably-TS routes over real HTTP, on uvicorn (ASGI) and wsgiref (WSGI).

Shapes, messages and status codes are the ones Durably-TS 0.15's handler
answers (its React client reads them).
"""

from __future__ import annotations

from typing import Any

import pytest

from durably import Durably, ValidationError
from durably.web import asgi_app, wsgi_app
from tests.web.conftest import API_DATABASES, Jobs
from tests.web.http_client import call, eventually

HIDDEN = {"idempotencyKey", "concurrencyKey", "leaseOwner", "leaseExpiresAt", "updatedAt"}


@pytest.fixture(params=API_DATABASES)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def trigger(api: str, job: str, input: Any = None, **options: Any) -> str:
    reply = call("POST", f"{api}/trigger", {"jobName": job, "input": input, **options})
    assert reply.status == 200, reply.body
    return str(reply.json()["runId"])


def finished(api: str, run_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        run = call("GET", f"{api}/run?runId={run_id}").json()
        return run if run["isTerminal"] else None

    return eventually(read)  # type: ignore[no-any-return]


def test_a_triggered_run_is_read_back_with_its_steps_logs_and_attempts(api: str) -> None:
    reply = call("POST", f"{api}/trigger", {"jobName": "greet", "input": {"name": "ada"}})
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["disposition"] == "created"
    run_id = reply.json()["runId"]

    run = finished(api, run_id)
    assert run["status"] == "completed"
    assert run["output"] == {"greeting": "hello ada"}
    assert run["input"] == {"name": "ada"}
    assert (run["isTerminal"], run["isActive"]) == (True, False)
    assert run["progress"] == {"current": 1, "total": 2, "message": "named"}
    assert HIDDEN.isdisjoint(run)

    steps = call("GET", f"{api}/steps?runId={run_id}").json()
    assert [(s["name"], s["index"], s["status"], s["output"]) for s in steps] == [
        ("name", 0, "completed", "ada")
    ]
    logs = call("GET", f"{api}/logs?runId={run_id}").json()
    assert [(log["level"], log["message"], log["data"]) for log in logs] == [
        ("info", "greeting", {"name": "ada"})
    ]
    attempts = call("GET", f"{api}/attempts?runId={run_id}").json()
    assert [(a["stepName"], a["status"], a["runAttempt"]) for a in attempts] == [
        ("name", "completed", 1)
    ]


def test_trigger_rejects_bad_requests_with_a_json_error(api: str) -> None:
    def error(reply: Any) -> tuple[int, str]:
        assert reply.headers["content-type"] == "application/json"
        return reply.status, reply.json()["error"]

    assert error(call("POST", f"{api}/trigger", {"input": {}})) == (400, "jobName is required")
    assert error(call("POST", f"{api}/trigger", {"jobName": "nope"})) == (
        404,
        "Job not found: nope",
    )
    not_json = call(
        "POST", f"{api}/trigger", raw=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400
    form = call(
        "POST",
        f"{api}/trigger",
        raw=b"jobName=greet",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415
    bad_label = call("POST", f"{api}/trigger", {"jobName": "greet", "labels": {"a b": "x"}})
    assert bad_label.status == 400
    assert "label" in bad_label.json()["error"]


def test_trigger_keys_and_dispositions(api: str, jobs: Jobs) -> None:
    first = trigger(api, "gated", {}, idempotencyKey="k1", labels={"team": "a"})
    again = call("POST", f"{api}/trigger", {"jobName": "gated", "idempotencyKey": "k1"})
    assert again.json() == {"runId": first, "disposition": "idempotent"}
    jobs.gate.set()
    assert finished(api, first)["labels"] == {"team": "a"}


def test_runs_are_filtered_and_paged_as_in_durably_ts(api: str, durably: Durably) -> None:
    greet = [trigger(api, "greet", {"name": str(n)}, labels={"n": str(n)}) for n in range(3)]
    for run_id in greet:
        finished(api, run_id)
    failing = trigger(api, "flaky", {})
    assert finished(api, failing)["status"] == "failed"

    def ids(query: str) -> list[str]:
        reply = call("GET", f"{api}/runs?{query}")
        assert reply.status == 200, reply.body
        return [run["id"] for run in reply.json()]

    assert ids("") == [failing, *reversed(greet)]  # newest first
    assert ids("jobName=greet") == list(reversed(greet))
    assert ids("jobName=greet&jobName=flaky") == [failing, *reversed(greet)]
    assert ids("status=failed") == [failing]
    assert ids("status=failed&status=completed") == [failing, *reversed(greet)]
    assert ids("label.n=1") == [greet[1]]
    assert ids("limit=2&offset=1") == [greet[2], greet[1]]

    running = call("GET", f"{api}/runs?status=running")
    assert running.status == 400
    assert running.json()["error"] == (
        "Invalid status: running. Must be one of: pending, leased, waiting, completed, failed, cancelled"
    )
    empty = call("GET", f"{api}/runs?status=&status=failed")
    assert empty.status == 400
    assert empty.json()["error"].startswith("Invalid status: empty value.")
    for query in ("limit=-1", "offset=x", "limit=1.5"):
        reply = call("GET", f"{api}/runs?{query}")
        assert reply.status == 400
        assert "must be a non-negative integer" in reply.json()["error"]


def test_run_routes_need_a_run_id_and_an_existing_run(api: str) -> None:
    for method, route in [
        ("GET", "/run"),
        ("GET", "/steps"),
        ("GET", "/subscribe"),
        ("POST", "/retrigger"),
        ("POST", "/cancel"),
        ("DELETE", "/run"),
        ("POST", "/retry"),
        ("GET", "/attempts"),
    ]:
        missing = call(method, f"{api}{route}")
        assert (missing.status, missing.json()) == (
            400,
            {"error": "runId query parameter is required"},
        ), route
        unknown = call(method, f"{api}{route}?runId=nope")
        assert (unknown.status, unknown.json()) == (404, {"error": "Run not found"}), route
    assert call("GET", f"{api}/no-such-route").status == 404


def test_cancel_retrigger_and_delete(api: str, jobs: Jobs) -> None:
    run_id = trigger(api, "gated", {})
    assert call("DELETE", f"{api}/run?runId={run_id}").status == 409  # still active
    assert call("POST", f"{api}/retrigger?runId={run_id}").status == 409
    assert call("POST", f"{api}/cancel?runId={run_id}").json() == {"success": True}
    assert finished(api, run_id)["status"] == "cancelled"
    assert call("POST", f"{api}/cancel?runId={run_id}").status == 409

    retriggered = call("POST", f"{api}/retrigger?runId={run_id}").json()
    assert retriggered["success"] is True
    assert retriggered["runId"] != run_id
    jobs.gate.set()
    assert finished(api, retriggered["runId"])["output"] == "opened"

    assert call("DELETE", f"{api}/run?runId={run_id}").json() == {"success": True}
    assert call("GET", f"{api}/run?runId={run_id}").status == 404


def test_retry_resumes_a_failed_run_where_it_failed(api: str) -> None:
    run_id = trigger(api, "flaky", {})
    failed = finished(api, run_id)
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: flaky step failed"

    assert call("POST", f"{api}/retry?runId={run_id}").json() == {"success": True, "runId": run_id}
    done = finished(api, run_id)
    assert (done["status"], done["output"], done["attempt"]) == ("completed", "recovered", 1)
    attempts = call("GET", f"{api}/attempts?runId={run_id}").json()
    assert [(a["stepName"], a["status"]) for a in attempts] == [
        ("first", "completed"),
        ("second", "failed"),
        ("second", "completed"),  # "first" was replayed, not run again
    ]
    assert "RuntimeError: flaky step failed" in attempts[1]["traceback"]
    assert call("POST", f"{api}/retry?runId={run_id}").status == 409


def test_bad_input_is_a_json_error_never_a_traceback(api: str) -> None:
    trigger_bodies: list[Any] = [
        [1, 2],
        "greet",
        {"jobName": 7},
        {"jobName": "greet", "labels": "team=a"},
        {"jobName": "greet", "labels": {"team": 1}},
        {"jobName": "greet", "priority": "high"},
        {"jobName": "greet", "delay": -5},
        {"jobName": "greet", "queue": ""},
        {"jobName": "greet", "coalesce": "skip"},
        {"jobName": "greet", "idempotencyKey": ["k"]},
    ]
    for body in trigger_bodies:
        reply = call("POST", f"{api}/trigger", body)
        assert reply.status == 400, (body, reply.body)
        assert isinstance(reply.json()["error"], str)
    for query in ("label.bad%20key=x", "limit=99999999999999999999999", "offset=1e3"):
        reply = call("GET", f"{api}/runs?{query}")
        assert reply.status == 400, reply.body
        assert isinstance(reply.json()["error"], str)


@pytest.mark.parametrize("make", [asgi_app, wsgi_app])
@pytest.mark.parametrize(
    "options",
    [{"auth": "token"}, {"sse_throttle": "fast"}, {"sse_throttle": float("nan")}],
)
def test_the_apps_refuse_bad_options(make: Any, options: dict[str, Any], durably: Durably) -> None:
    with pytest.raises(ValidationError):
        make(durably, **options)


@pytest.mark.parametrize("make", [asgi_app, wsgi_app])
def test_the_apps_need_a_durably_instance(make: Any) -> None:
    with pytest.raises(ValidationError, match="expected a Durably instance"):
        make("sqlite:///durably.db")
