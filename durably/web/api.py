"""The routes: Durably-TS 0.15's handler, then durably's own (retry, attempts, logs,
workers, stats, schedules). Each is a flow of effects (:mod:`durably.web.effects`).

Messages and status codes follow TS where TS has the route, so that its
React client, and code written against it, read them the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..models import Run
from ..status import RunStatus
from ..waits import Wait
from . import routes, wire
from .auth import Auth, RunFilter, SignalRequest, TriggerRequest
from .effects import Call, Flow, Hook, Listen
from .http import SSE_HEADERS, HTTPError, Request, Response, Result, Stream, json_response
from .streams import LIST_EVENTS, RUN_EVENTS, Pacing, list_stream, run_stream

SUCCESS = {"success": True}
_NON_NEGATIVE = re.compile(r"^[0-9]+$")
LABEL_PREFIX = "label."
MAX_COUNT = 2**53 - 1
"""The largest ``limit``/``offset`` taken: JavaScript's largest exact integer (SQLite's
integers would overflow a little further on)."""


@dataclass(frozen=True)
class Session:
    """What a route needs: durably, the auth hooks and the request's auth context."""

    durably: Any
    auth: Auth | None
    ctx: Any
    pacing: Pacing

    def hook(self, name: str, *args: Any) -> Flow[Any]:
        """Call auth hook ``name`` with the context first; None when it is not set."""
        fn = None if self.auth is None else getattr(self.auth, name)
        if fn is None:
            return None
        return (yield Hook(fn, (self.ctx, *args)))

    def run_for(self, request: Request, operation: str) -> Flow[Run]:
        """The run named by ``?runId=``, once ``on_run_access`` allowed ``operation``."""
        run_id = _run_id(request)
        run = yield Call(self.durably, "get_run", (run_id,))
        if run is None:
            raise HTTPError(404, "Run not found")
        yield from self.hook("on_run_access", run, operation)
        return run  # type: ignore[no-any-return]

    def scoped(self, request: Request) -> Flow[RunFilter]:
        """The run filter of the query, narrowed by ``scope_runs``."""
        run_filter = RunFilter(
            job_names=tuple(name for name in request.query.get("jobName", ()) if name),
            statuses=_statuses(request),
            labels={
                key[len(LABEL_PREFIX) :]: values[0]
                for key, values in request.query.items()
                if key.startswith(LABEL_PREFIX) and values
            },
        )
        scoped = yield from self.hook("scope_runs", run_filter)
        if scoped is None:
            return run_filter
        if not isinstance(scoped, RunFilter):
            raise TypeError("scope_runs must return a durably.web.RunFilter")
        return scoped


def _run_id(request: Request) -> str:
    run_id = request.param("runId")
    if not run_id:
        raise HTTPError(400, "runId query parameter is required")
    return run_id


def _statuses(request: Request) -> tuple[str, ...]:
    allowed = [status.value for status in RunStatus]
    statuses = tuple(request.query.get("status", ()))
    for status in statuses:
        if status not in allowed:
            shown = "empty value" if status == "" else status
            raise HTTPError(400, f"Invalid status: {shown}. Must be one of: {', '.join(allowed)}")
    return statuses


def _count(request: Request, name: str) -> int | None:
    value = request.param(name)
    if value is None:
        return None
    if not _NON_NEGATIVE.match(value) or int(value) > MAX_COUNT:
        raise HTTPError(400, f"Invalid {name}: must be a non-negative integer")
    return int(value)


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPError(400, "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "The request body must be a JSON object")
    return body


def _get_runs_kwargs(run_filter: RunFilter) -> dict[str, Any]:
    return {
        "job_name": list(run_filter.job_names) or None,
        "status": list(run_filter.statuses) or None,
        "labels": dict(run_filter.labels) or None,
    }


# -- Durably-TS routes ----------------------------------------------------------


_TRIGGER_OPTIONS = {
    "idempotencyKey": "idempotency_key",
    "concurrencyKey": "concurrency_key",
    "labels": "labels",
    "coalesce": "coalesce",
    "delay": "delay",
    "priority": "priority",
    "queue": "queue",
}


def trigger(s: Session, request: Request) -> Flow[Result]:
    body = _json_body(request)
    job_name = body.get("jobName")
    if not job_name or not isinstance(job_name, str):
        raise HTTPError(400, "jobName is required")
    job = s.durably.get_job(job_name)
    if job is None:
        raise HTTPError(404, f"Job not found: {job_name}")
    options = {
        python: body[name]
        for name, python in _TRIGGER_OPTIONS.items()
        if body.get(name) is not None
    }
    yield from s.hook("on_trigger", TriggerRequest(job_name, body.get("input"), **options))
    run = yield Call(job, "trigger", (body.get("input"),), options)
    return json_response({"runId": run.id, "disposition": run.disposition.value})


def list_runs(s: Session, request: Request) -> Flow[Result]:
    limit, offset = _count(request, "limit"), _count(request, "offset")
    run_filter = yield from s.scoped(request)
    kwargs = {**_get_runs_kwargs(run_filter), "limit": limit, "offset": offset or 0}
    runs = yield Call(s.durably, "get_runs", kwargs=kwargs)
    return json_response([wire.client_run(run) for run in runs])


def get_run(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "read")
    return json_response(wire.client_run(run))


def get_steps(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "steps")
    steps = yield Call(s.durably, "get_steps", (run.id,))
    return json_response([wire.step(step) for step in steps])


def retrigger(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "retrigger")
    new = yield Call(s.durably, "retrigger", (run.id,))
    return json_response({**SUCCESS, "runId": new.id})


def cancel(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "cancel")
    yield Call(s.durably, "cancel", (run.id,))
    return json_response(SUCCESS)


def delete_run(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "delete")
    yield Call(s.durably, "delete_run", (run.id,))
    return json_response(SUCCESS)


def subscribe(s: Session, request: Request) -> Flow[Result]:
    run_id = _run_id(request)

    def accept(event: Any) -> bool:
        return bool(event.run_id == run_id and event.type in RUN_EVENTS)

    # Listen before reading, so that nothing that happens in between is lost.
    inbox = yield Listen(s.durably, accept)
    try:
        run = yield from s.run_for(request, "subscribe")
    except BaseException:
        inbox.close()
        raise
    return Stream(SSE_HEADERS, run_stream(s.durably, inbox, run, s.pacing))


def subscribe_runs(s: Session, request: Request) -> Flow[Result]:
    run_filter = yield from s.scoped(request)
    job_names, labels = frozenset(run_filter.job_names), dict(run_filter.labels)

    def accept(event: Any) -> bool:
        return bool(
            event.type in LIST_EVENTS
            and (not job_names or event.job_name in job_names)
            and all(event.labels.get(key) == value for key, value in labels.items())
        )

    inbox = yield Listen(s.durably, accept)
    kwargs = _get_runs_kwargs(RunFilter(run_filter.job_names, (), labels))
    return Stream(SSE_HEADERS, list_stream(s.durably, inbox, kwargs, s.pacing))


# -- beyond Durably-TS ----------------------------------------------------------


def retry(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "retry")
    yield Call(s.durably, "retry", (run.id,))
    return json_response({**SUCCESS, "runId": run.id})


def get_attempts(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "attempts")
    attempts = yield Call(s.durably, "get_step_attempts", (run.id,))
    return json_response([wire.attempt(value) for value in attempts])


def get_logs(s: Session, request: Request) -> Flow[Result]:
    run = yield from s.run_for(request, "logs")
    logs = yield Call(s.durably, "get_logs", (run.id,))
    return json_response([wire.log(value) for value in logs])


def get_workers(s: Session, request: Request) -> Flow[Result]:
    workers = yield Call(s.durably, "get_workers")
    return json_response([wire.worker(value) for value in workers])


def get_stats(s: Session, request: Request) -> Flow[Result]:
    stats = yield Call(s.durably, "get_queue_stats")
    return json_response(wire.stats(stats, sorted(s.durably.jobs)))


def get_schedules(s: Session, request: Request) -> Flow[Result]:
    schedules = yield Call(s.durably, "get_schedules")
    return json_response([wire.schedule(value) for value in schedules])


def _schedule_change(method: str) -> Callable[[Session, Request], Flow[Result]]:
    def change(s: Session, request: Request) -> Flow[Result]:
        name = request.param("name")
        if not name:
            raise HTTPError(400, "name query parameter is required")
        schedule = yield Call(s.durably, method, (name,))
        return json_response(wire.schedule(schedule))

    return change


# -- durable waits (Durably-TS main, ADR-0012) -----------------------------------


def _wait_run(s: Session, request: Request, operation: str) -> Flow[Run]:
    """The run whose waits are asked for: with an ``auth``, ``on_run_access`` must decide."""
    if s.auth is not None and s.auth.on_run_access is None:
        raise HTTPError(400, "Wait access requires onRunAccess")
    run: Run = yield from s.run_for(request, operation)
    return run


def _wait_of(s: Session, request: Request, run: Run) -> Flow[Wait]:
    """The wait named by ``?waitId=``, if it is this run's (a wait id alone grants nothing)."""
    wait_id = request.param("waitId")
    if not wait_id:
        raise HTTPError(400, "waitId query parameter is required")
    wait = yield Call(s.durably, "get_wait", (wait_id,))
    if wait is None or wait.run_id != run.id:
        raise HTTPError(404, "Wait not found")
    return wait  # type: ignore[no-any-return]


def get_waits(s: Session, request: Request) -> Flow[Result]:
    run = yield from _wait_run(s, request, "waits")
    waits = yield Call(s.durably, "get_waits", (run.id,))
    return json_response([wire.wait(value) for value in waits])


def get_wait(s: Session, request: Request) -> Flow[Result]:
    run = yield from _wait_run(s, request, "waits")
    wait = yield from _wait_of(s, request, run)
    return json_response(wire.wait(wait))


def signal(s: Session, request: Request) -> Flow[Result]:
    run = yield from _wait_run(s, request, "signal")
    wait = yield from _wait_of(s, request, run)
    body = _json_body(request)
    signal_id = body.get("signalId")
    if not isinstance(signal_id, str) or not signal_id:
        raise HTTPError(400, "signalId is required")
    if "payload" not in body:
        raise HTTPError(400, "payload is required")
    signal_request = SignalRequest(signal_id=signal_id, payload=body["payload"])
    yield from s.hook("on_signal", run, wait, signal_request)
    disposition = yield Call(
        s.durably, "signal", (wait.id, signal_request.payload), {"signal_id": signal_id}
    )
    signalled = yield Call(s.durably, "get_wait", (wait.id,))
    return json_response({"wait": wire.wait(signalled), "disposition": disposition})


def get_metrics(s: Session, request: Request) -> Flow[Result]:
    """Prometheus's text format, for an instance with ``DurablyMetrics`` (``durably[prometheus]``)."""
    try:
        from ..contrib.prometheus import CONTENT_TYPE, metrics_of
    except ImportError:  # prometheus_client is not installed
        raise HTTPError(404, "No metrics: install durably[prometheus]") from None
    metrics = metrics_of(s.durably)
    if metrics is None:
        raise HTTPError(
            404, "No metrics: create durably.contrib.prometheus.DurablyMetrics(durably)"
        )
    body = yield Call(metrics, "exposition")
    return Response(200, (("content-type", CONTENT_TYPE),), body)


RouteFn = Callable[[Session, Request], Flow[Result]]


def route_table() -> Mapping[tuple[str, str], tuple[RouteFn, bool]]:
    """(method, path) → (route, whether it changes state)."""
    return {
        ("POST", routes.TRIGGER): (trigger, True),
        ("GET", routes.RUNS): (list_runs, False),
        ("GET", routes.RUN): (get_run, False),
        ("GET", routes.STEPS): (get_steps, False),
        ("GET", routes.SUBSCRIBE): (subscribe, False),
        ("GET", routes.RUNS_SUBSCRIBE): (subscribe_runs, False),
        ("POST", routes.RETRIGGER): (retrigger, True),
        ("POST", routes.CANCEL): (cancel, True),
        ("DELETE", routes.RUN): (delete_run, True),
        ("POST", routes.RETRY): (retry, True),
        ("GET", routes.ATTEMPTS): (get_attempts, False),
        ("GET", routes.LOGS): (get_logs, False),
        ("GET", routes.WORKERS): (get_workers, False),
        ("GET", routes.STATS): (get_stats, False),
        ("GET", routes.SCHEDULES): (get_schedules, False),
        ("POST", routes.SCHEDULE_PAUSE): (_schedule_change("pause_schedule"), True),
        ("POST", routes.SCHEDULE_RESUME): (_schedule_change("resume_schedule"), True),
        ("GET", routes.METRICS): (get_metrics, False),
        ("GET", routes.WAITS): (get_waits, False),
        ("GET", routes.WAIT): (get_wait, False),
        ("POST", routes.SIGNAL): (signal, True),
    }
