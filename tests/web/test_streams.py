"""``/subscribe`` and ``/runs/subscribe`` over real HTTP: frames, filtering, throttling, and
runs changed by another process (seen by polling)."""

from __future__ import annotations

from typing import Any

from durably import Durably
from tests.web.conftest import Jobs, Serve
from tests.web.http_client import EventStream, call
from tests.web.test_routes import finished, trigger


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["type"] for frame in frames]


def test_subscribe_streams_a_run_until_it_ends(api: str, jobs: Jobs) -> None:
    run_id = trigger(api, "gated", {})
    with EventStream(f"{api}/subscribe?runId={run_id}") as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        stream.until(lambda f: f["type"] == "run:leased")
        jobs.gate.set()
        frames = stream.until(lambda f: f["type"] == "run:complete")
        assert stream.next() is None  # the server ends the stream with the run
    assert {f["runId"] for f in frames} == {run_id}
    assert ("step:complete", "after") in [(f["type"], f.get("stepName")) for f in frames]
    assert frames[-1]["output"] == "opened"
    assert frames[-1]["jobName"] == "gated"
    assert isinstance(frames[-1]["sequence"], int)


def test_subscribe_to_a_finished_run_sends_its_end_and_closes(api: str) -> None:
    run_id = trigger(api, "flaky", {})
    finished(api, run_id)
    with EventStream(f"{api}/subscribe?runId={run_id}") as stream:
        first = stream.next()
        assert stream.next() is None
    assert first is not None
    assert (first["type"], first["error"]) == ("run:fail", "RuntimeError: flaky step failed")


def test_progress_is_throttled_per_run_and_flushed_before_the_end(
    serve: Serve, durably: Durably
) -> None:
    with serve(allow_unauthenticated=True, sse_throttle=3600) as api:
        run_id = trigger(api, "gated", {})  # holds the worker until the stream is open
        counted = call("POST", f"{api}/trigger", {"jobName": "count", "input": {"to": 5}})
        count_id = counted.json()["runId"]
        with EventStream(f"{api}/subscribe?runId={count_id}") as stream:
            call("POST", f"{api}/cancel?runId={run_id}")
            frames = stream.until(lambda f: f["type"] == "run:complete")
    progress = [f["progress"]["current"] for f in frames if f["type"] == "run:progress"]
    # the first goes out at once; the rest are held, and the latest is sent before the end
    assert progress == [1, 5]


def test_runs_subscribe_filters_by_job_and_label(api: str, jobs: Jobs) -> None:
    with EventStream(f"{api}/runs/subscribe?jobName=greet&label.team=a") as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        other_job = trigger(api, "flaky", {}, labels={"team": "a"})
        other_team = trigger(api, "greet", {"name": "b"}, labels={"team": "b"})
        ours = trigger(api, "greet", {"name": "a"}, labels={"team": "a"})
        frames = stream.until(lambda f: f["type"] == "run:complete")
    assert {f["runId"] for f in frames} == {ours}
    assert types(frames)[0] == "run:trigger"
    assert "run:leased" in types(frames)
    # the reduced projection: no output or timestamp
    assert "output" not in frames[-1]
    assert "timestamp" not in frames[-1]
    assert frames[-1]["labels"] == {"team": "a"}
    finished(api, other_job)
    finished(api, other_team)


def test_runs_changed_by_another_process_are_seen_by_polling(
    api: str, durably: Durably, db_url: str
) -> None:
    """A second ``Durably`` on the same database stands for another process: its events
    never reach the server's listeners, only the database does."""
    other = Durably(db_url)

    @other.job("elsewhere")
    def elsewhere(step: Any, input: Any) -> Any:
        return step.run("work", lambda: "done elsewhere")

    try:
        with EventStream(f"{api}/runs/subscribe?jobName=elsewhere") as runs_stream:
            # the stream has read its first snapshot once its first poll is answered
            run = elsewhere.trigger({})
            triggered = runs_stream.until(lambda f: f["runId"] == run.id)
            with EventStream(f"{api}/subscribe?runId={run.id}") as run_stream:
                other.process_until_idle()
                ended = run_stream.until(lambda f: f["type"] == "run:complete")
            completed = runs_stream.until(lambda f: f["type"] == "run:complete")
    finally:
        other.close()
    assert types(triggered) == ["run:trigger"]
    assert ended[-1]["output"] == "done elsewhere"
    assert completed[-1]["runId"] == run.id
