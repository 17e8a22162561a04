"""Auth over real HTTP: 401 and 403 paths, the hooks' order, tenant scoping, cross-site writes."""

from __future__ import annotations

from typing import Any

from durably import Run
from durably.web import Auth, HTTPError, Request, RunFilter, TriggerRequest
from tests.web.conftest import Jobs, Serve
from tests.web.http_client import EventStream, call


def test_without_auth_reads_work_and_changes_answer_403(serve: Serve, jobs: Jobs) -> None:
    with serve() as api:
        assert call("GET", f"{api}/runs").status == 200
        assert call("GET", f"{api}/stats").status == 200
        changes = [
            call("POST", f"{api}/trigger", {"jobName": "greet", "input": {"name": "x"}}),
            call("POST", f"{api}/cancel?runId=any"),
            call("POST", f"{api}/retrigger?runId=any"),
            call("POST", f"{api}/retry?runId=any"),
            call("DELETE", f"{api}/run?runId=any"),
            call("POST", f"{api}/schedules/pause?name=any"),
        ]
        assert [reply.status for reply in changes] == [403] * len(changes)
        assert "allow_unauthenticated" in changes[0].json()["error"]
        assert call("GET", f"{api}/runs").json() == []  # nothing was triggered


def test_authenticate_rejects_every_route_with_its_status(serve: Serve) -> None:
    def authenticate(request: Request) -> str:
        if request.headers.get("authorization") != "Bearer good":
            raise HTTPError(401, "Unauthorized")
        return "ok"

    with serve(auth=Auth(authenticate=authenticate)) as api:
        for method, route in [("GET", "/runs"), ("GET", "/"), ("GET", "/runs/subscribe")]:
            reply = call(method, f"{api}{route}")
            assert (reply.status, reply.json()) == (401, {"error": "Unauthorized"}), route
        good = {"Authorization": "Bearer good"}
        assert call("GET", f"{api}/runs", headers=good).status == 200
        trigger = call(
            "POST", f"{api}/trigger", {"jobName": "greet", "input": {"name": "a"}}, headers=good
        )
        assert trigger.status == 200


class Tenants:
    """Each request belongs to the tenant of its ``X-Tenant`` header, and sees only its runs."""

    def __init__(self) -> None:
        self.triggers: list[tuple[str, TriggerRequest]] = []

    async def authenticate(self, request: Request) -> str:
        tenant = request.headers.get("x-tenant")
        if not tenant:
            raise HTTPError(401, "Who are you?")
        return tenant

    def on_trigger(self, tenant: str, trigger: TriggerRequest) -> None:
        self.triggers.append((tenant, trigger))
        if dict(trigger.labels or {}).get("tenant") != tenant:
            raise HTTPError(403, "Runs must carry your tenant label")

    async def on_run_access(self, tenant: str, run: Run, operation: str) -> None:
        if run.labels.get("tenant") != tenant:
            raise HTTPError(404, "Run not found")

    def scope_runs(self, tenant: str, run_filter: RunFilter) -> RunFilter:
        return RunFilter(
            run_filter.job_names, run_filter.statuses, {**run_filter.labels, "tenant": tenant}
        )

    def auth(self) -> Auth:
        return Auth(
            authenticate=self.authenticate,
            on_trigger=self.on_trigger,
            on_run_access=self.on_run_access,
            scope_runs=self.scope_runs,
        )


def test_tenants_see_and_change_only_their_own_runs(serve: Serve, jobs: Jobs) -> None:
    tenants = Tenants()
    a, b = {"X-Tenant": "a"}, {"X-Tenant": "b"}

    def trigger(headers: dict[str, str], tenant: str) -> Any:
        body = {"jobName": "gated", "input": {}, "labels": {"tenant": tenant}}
        return call("POST", f"{api}/trigger", body, headers=headers)

    with serve(auth=tenants.auth()) as api:
        run_a = trigger(a, "a").json()["runId"]
        run_b = trigger(b, "b").json()["runId"]
        assert trigger(a, "b").status == 403
        assert [t for t, _ in tenants.triggers] == ["a", "b", "a"]
        assert tenants.triggers[0][1].job_name == "gated"
        unknown = call("POST", f"{api}/trigger", {"jobName": "nope"}, headers=a)
        assert unknown.status == 404  # on_trigger is not called for an unknown job
        assert len(tenants.triggers) == 3

        assert [r["id"] for r in call("GET", f"{api}/runs", headers=a).json()] == [run_a]
        assert [r["id"] for r in call("GET", f"{api}/runs?label.tenant=b", headers=a).json()] == [
            run_a
        ]
        for method, route in [
            ("GET", "/run"),
            ("GET", "/steps"),
            ("POST", "/cancel"),
            ("DELETE", "/run"),
            ("GET", "/subscribe"),
        ]:
            reply = call(method, f"{api}{route}?runId={run_b}", headers=a)
            assert reply.status == 404, route
        assert call("GET", f"{api}/run?runId={run_b}", headers=b).status == 200
        assert call("POST", f"{api}/cancel?runId={run_a}", headers=a).json() == {"success": True}
        with EventStream(f"{api}/runs/subscribe", headers=b) as stream:
            call("POST", f"{api}/cancel?runId={run_a}", headers=a)  # 409: already cancelled
            assert call("POST", f"{api}/cancel?runId={run_b}", headers=b).status == 200
            frames = stream.until(lambda f: f["type"] == "run:cancel")
        assert {f["runId"] for f in frames} == {run_b}  # nothing of tenant a


def test_a_page_of_another_site_cannot_change_state(api: str, jobs: Jobs) -> None:
    body = {"jobName": "greet", "input": {"name": "x"}}
    cross = call("POST", f"{api}/trigger", body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403
    evil = call("POST", f"{api}/trigger", body, headers={"Origin": "https://evil.example"})
    assert evil.status == 403
    host = api.split("/")[2]
    same = call("POST", f"{api}/trigger", body, headers={"Origin": f"http://{host}"})
    assert same.status == 200
    form = call(
        "POST",
        f"{api}/cancel?runId={same.json()['runId']}",
        raw=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415
