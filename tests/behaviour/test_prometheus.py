"""Prometheus metrics (``durably.contrib.prometheus``), parsed from the exposition, on both
engines and every driver."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from durably import Durably, StepContext, testing
from durably.contrib.prometheus import DurablyMetrics, metrics_of

pytestmark = pytest.mark.both_engines


def _samples(metrics: DurablyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_runs_steps_and_the_queue_are_counted(durably: Durably) -> None:
    metrics = DurablyMetrics(durably)
    assert metrics_of(durably) is metrics

    @durably.job("import")
    def import_job(step: StepContext, input: Any) -> Any:
        step.run("read", lambda: 1)
        if input.get("fail"):
            raise ValueError("bad row")
        return step.run("write", lambda: 2)

    import_job.trigger({})
    import_job.trigger({}, queue="bulk")
    import_job.trigger({"fail": True})
    assert durably.process_until_idle() == 3
    import_job.trigger({})
    import_job.trigger({})  # one left pending, one taken by a worker that then died
    stuck = testing.claim(durably, "a-worker-that-died")
    assert stuck is not None
    testing.expire_lease(durably, stuck.lease.run_id)

    samples = _samples(metrics)
    job = ("job", "import")
    assert samples[("durably_runs_started_total", (job, ("queue", "default")))] == 2
    assert samples[("durably_runs_started_total", (job, ("queue", "bulk")))] == 1
    assert samples[("durably_runs_completed_total", (job, ("queue", "default")))] == 1
    assert samples[("durably_runs_failed_total", (job, ("queue", "default")))] == 1
    assert samples[("durably_step_duration_seconds_count", (job,))] == 5  # 2 + 2 + 1
    assert samples[("durably_run_duration_seconds_count", (job,))] == 2
    assert samples[("durably_runs", (("status", "pending"),))] == 1
    assert samples[("durably_runs", (("status", "stale"),))] == 1
    assert samples[("durably_runs", (("status", "running"),))] == 0
    assert samples[("durably_oldest_pending_age_seconds", ())] >= 0

    metrics.close()
    assert metrics_of(durably) is None
    import_job.trigger({})
    durably.process_until_idle()
    assert _samples(metrics)[("durably_runs_completed_total", (job, ("queue", "default")))] == 1
