"""The durable-wait routes over real HTTP (Durably-TS main's ADR-0012): list and read a
run's waits, signal one, and what a wait id alone does not grant."""

from __future__ import annotations

from typing import Any

import pytest

from durably import Durably, StepContext
from durably.web import Auth, HTTPError
from tests.web.conftest import API_DATABASES, Serve
from tests.web.http_client import call, eventually
from tests.web.test_routes import finished, trigger


@pytest.fixture(params=API_DATABASES)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _approval_job(durably: Durably) -> None:
    @durably.job("approve")
    def approve(step: StepContext, input: Any) -> Any:
        wait = step.prepare_wait("manager", timeout=input["timeout"], metadata={"amount": 120})
        result = step.wait_for(wait)
        return {"type": result.type, "payload": result.payload}


def _waiting(api: str, run_id: str) -> dict[str, Any]:
    """The run's one wait, once the run is suspended on it."""
    run = eventually(
        lambda: (r := call("GET", f"{api}/run?runId={run_id}").json())["isWaiting"] and r
    )
    assert run["status"] == "waiting"
    (wait,) = call("GET", f"{api}/waits?runId={run_id}").json()
    return dict(wait)


def test_a_run_waits_is_signalled_over_http_and_completes(api: str, durably: Durably) -> None:
    _approval_job(durably)
    run_id = trigger(api, "approve", {"timeout": 60})
    wait = _waiting(api, run_id)
    assert (wait["name"], wait["status"], wait["metadata"]) == (
        "manager",
        "pending",
        {"amount": 120},
    )
    read = call("GET", f"{api}/wait?runId={run_id}&waitId={wait['id']}").json()
    assert read["id"] == wait["id"]

    signal_url = f"{api}/signal?runId={run_id}&waitId={wait['id']}"
    first = call("POST", signal_url, {"signalId": "s-1", "payload": {"approved": True}})
    assert first.status == 200
    assert first.json()["disposition"] == "accepted"
    assert first.json()["wait"]["status"] == "signalled"
    again = call("POST", signal_url, {"signalId": "s-1", "payload": {"approved": True}})
    assert (again.status, again.json()["disposition"]) == (200, "duplicate")
    other = call("POST", signal_url, {"signalId": "s-1", "payload": {"approved": False}})
    assert other.status == 409

    done = finished(api, run_id)
    assert done["output"] == {"type": "signal", "payload": {"approved": True}}


def test_signal_requests_are_checked_before_anything_is_stored(api: str, durably: Durably) -> None:
    _approval_job(durably)
    run_id = trigger(api, "approve", {"timeout": 60})
    other_run = trigger(api, "approve", {"timeout": 60})
    wait = _waiting(api, run_id)
    _waiting(api, other_run)
    url = f"{api}/signal?runId={run_id}&waitId={wait['id']}"
    assert call("POST", url, {"payload": 1}).json() == {"error": "signalId is required"}
    assert call("POST", url, {"signalId": "s"}).json() == {"error": "payload is required"}
    assert (
        call("POST", f"{api}/signal?runId={run_id}", {"signalId": "s", "payload": 1}).status == 400
    )
    # Another run's id with this wait's id: the wait is not found there, and stays pending.
    foreign = call(
        "POST",
        f"{api}/signal?runId={other_run}&waitId={wait['id']}",
        {"signalId": "s", "payload": 1},
    )
    assert (foreign.status, foreign.json()) == (404, {"error": "Wait not found"})
    assert call("GET", f"{api}/waits?runId=nope").status == 404
    assert durably.get_wait(wait["id"]).status.value == "pending"  # type: ignore[union-attr]


def test_a_signal_after_the_deadline_is_410(api: str, durably: Durably) -> None:
    _approval_job(durably)
    run_id = trigger(api, "approve", {"timeout": 0.2})
    assert finished(api, run_id)["output"] == {"type": "timeout", "payload": None}
    (wait,) = call("GET", f"{api}/waits?runId={run_id}").json()
    late = call(
        "POST", f"{api}/signal?runId={run_id}&waitId={wait['id']}", {"signalId": "s", "payload": 1}
    )
    assert late.status == 410
    assert "error" in late.json()


def test_with_auth_the_wait_routes_need_on_run_access_and_on_signal_may_refuse(
    serve: Serve, durably: Durably
) -> None:
    _approval_job(durably)
    run_id = durably.get_job("approve").trigger({"timeout": 60}).id  # type: ignore[union-attr]
    with serve(auth=Auth(authenticate=lambda request: "user")) as api:
        reply = call("GET", f"{api}/waits?runId={run_id}")
        assert (reply.status, reply.json()) == (400, {"error": "Wait access requires onRunAccess"})

    def refuse_large(ctx: Any, run: Any, wait: Any, signal: Any) -> None:
        if wait.metadata["amount"] > 100 and signal.payload.get("approved"):
            raise HTTPError(403, "needs a second approver")

    auth = Auth(
        authenticate=lambda request: "user",
        on_run_access=lambda ctx, run, operation: None,
        on_signal=refuse_large,
    )
    with serve(auth=auth) as api:
        wait = _waiting(api, run_id)
        refused = call(
            "POST",
            f"{api}/signal?runId={run_id}&waitId={wait['id']}",
            {"signalId": "s", "payload": {"approved": True}},
        )
        assert (refused.status, refused.json()) == (403, {"error": "needs a second approver"})
        assert durably.get_wait(wait["id"]).status.value == "pending"  # type: ignore[union-attr]
