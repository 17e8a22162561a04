"""The routes beyond Durably-TS over real HTTP: workers, stats, schedules."""

from __future__ import annotations

import pytest

from durably import Durably
from tests.web.conftest import API_DATABASES, Jobs
from tests.web.http_client import call, eventually
from tests.web.test_routes import trigger


@pytest.fixture(params=API_DATABASES)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_workers_lists_the_running_engine(api: str, durably: Durably) -> None:
    workers = eventually(lambda: call("GET", f"{api}/workers").json())
    assert durably.worker_id in [w["id"] for w in workers]
    ours = next(w for w in workers if w["id"] == durably.worker_id)
    assert ours["isStale"] is False
    assert ours["engine"] in ("thread", "asyncio")


def test_stats_counts_the_queue_and_names_the_jobs(api: str, jobs: Jobs) -> None:
    trigger(api, "gated", {})
    trigger(api, "gated", {})
    stats = eventually(lambda: (s := call("GET", f"{api}/stats").json())["running"] == 1 and s)
    assert stats["pending"] == 1
    assert stats["oldestPendingAgeMs"] >= 0
    assert stats["jobs"] == ["count", "flaky", "gated", "greet"]
    jobs.gate.set()


def test_schedules_are_listed_paused_and_resumed(api: str, durably: Durably) -> None:
    durably.schedule("hourly-greet", "greet", every=3600, input={"name": "clock"})
    listed = call("GET", f"{api}/schedules").json()
    assert [(s["name"], s["jobName"], s["everyMs"], s["paused"]) for s in listed] == [
        ("hourly-greet", "greet", 3_600_000, False)
    ]
    paused = call("POST", f"{api}/schedules/pause?name=hourly-greet")
    assert (paused.status, paused.json()["paused"], paused.json()["nextTick"]) == (200, True, None)
    assert durably.get_schedules()[0].paused
    resumed = call("POST", f"{api}/schedules/resume?name=hourly-greet").json()
    assert resumed["paused"] is False
    assert call("POST", f"{api}/schedules/pause?name=nope").status == 404
    assert call("POST", f"{api}/schedules/pause").json() == {
        "error": "name query parameter is required"
    }


def test_metrics_are_served_once_the_instance_has_them(api: str, durably: Durably) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from durably.contrib.prometheus import DurablyMetrics

    absent = call("GET", f"{api}/metrics")
    assert absent.status == 404
    assert "DurablyMetrics" in absent.json()["error"]
    metrics = DurablyMetrics(durably)
    try:
        trigger(api, "greet", {"name": "ana"})
        reply = call("GET", f"{api}/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/plain")
        names = {family.name for family in text_string_to_metric_families(reply.body.decode())}
        assert {
            "durably_runs",
            "durably_runs_started",
            "durably_oldest_pending_age_seconds",
        } <= names
    finally:
        metrics.close()
