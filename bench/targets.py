"""The goals of the benchmark issue, judged from the results of one run.

A target that compares two cases (durably and the floor, 4 processes and
1) judges their paired ratio: the median over the repetitions of the ratio
within each (:func:`~bench.report.paired_ratio`). A target on one case
judges its median. A target whose cases were not measured (``--only``, a
failure) says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable

from .plan import durably_id, floor_id, peer_id
from .report import Result, Target, number, paired_ratio

Results = dict[str, Result]


def _median(results: Results, case_id: str, metric: str) -> float | None:
    result = results.get(case_id)
    return None if result is None else result.median(metric)


def _ratio_to_floor(
    engine: str, workload: str, metric: str, minimum: float
) -> Callable[[Results], tuple[str, bool] | None]:
    def judge(results: Results) -> tuple[str, bool] | None:
        return _paired(
            results, durably_id(engine, workload, "sqlite"), floor_id(workload), metric, minimum
        )

    return judge


def _paired(
    results: Results, mine_id: str, base_id: str, metric: str, minimum: float
) -> tuple[str, bool] | None:
    """``mine / base`` repetition by repetition (see :func:`paired_ratio`), against ``minimum``."""
    mine, base = results.get(mine_id), results.get(base_id)
    if mine is None or base is None:
        return None
    ratio = paired_ratio(mine, base, metric)
    mine_median, base_median = mine.median(metric), base.median(metric)
    if ratio is None or mine_median is None or base_median is None:
        return None
    figures = (
        f"{number(mine_median)} vs {number(base_median)} {metric} (medians); paired {ratio:.2f}x"
    )
    return figures, ratio >= minimum


def _batch_over_single(results: Results) -> tuple[str, bool] | None:
    return _paired(
        results,
        durably_id("thread", "w1-batch", "sqlite"),
        durably_id("thread", "w1-single", "sqlite"),
        "triggers/s",
        10,
    )


def _ahead_of_dbos(engine: str) -> Callable[[Results], tuple[str, bool] | None]:
    def judge(results: Results) -> tuple[str, bool] | None:
        return _paired(
            results, durably_id(engine, "w2", "sqlite"), peer_id("dbos", "w2"), "runs/s", 3
        )

    return judge


def _latency(results: Results) -> tuple[str, bool] | None:
    p50 = _median(results, durably_id("thread", "w3", "sqlite"), "p50 ms")
    if p50 is None:
        return None
    return f"p50 {number(p50)} ms", p50 <= 20


def _processes(results: Results) -> tuple[str, bool] | None:
    return _paired(
        results,
        durably_id("procs", "w5-procs-4", "sqlite"),
        durably_id("procs", "w5-procs-1", "sqlite"),
        "runs/s",
        1.0,
    )


def _history(results: Results) -> tuple[str, bool] | None:
    return _paired(
        results,
        durably_id("thread", "w5-history-100000", "sqlite"),
        durably_id("thread", "w5-history-10000", "sqlite"),
        "runs/s",
        0.9,
    )


def _memory(results: Results) -> tuple[str, bool] | None:
    growth = _median(results, durably_id("procs", "w5-memory", "sqlite"), "RSS growth %")
    peak = _median(results, durably_id("procs", "w5-memory", "sqlite"), "peak RSS MB")
    if growth is None or peak is None:
        return None
    return f"peak {number(peak)} MB, {growth:+.1f}% from 25% of the runs to the end", growth <= 10


TARGETS = (
    Target(
        "W2 thread engine >= 0.5 x floor (SQLite, NORMAL)",
        _ratio_to_floor("thread", "w2", "runs/s", 0.5),
    ),
    Target(
        "W2 asyncio engine >= 0.4 x floor (SQLite, NORMAL)",
        _ratio_to_floor("asyncio", "w2", "runs/s", 0.4),
    ),
    Target("W2 thread engine >= 3 x DBOS (SQLite, NORMAL)", _ahead_of_dbos("thread")),
    Target("W2 asyncio engine >= 3 x DBOS (SQLite, NORMAL)", _ahead_of_dbos("asyncio")),
    Target(
        "W1 single trigger >= 0.5 x floor (SQLite)",
        _ratio_to_floor("thread", "w1-single", "triggers/s", 0.5),
    ),
    Target("W1 batch >= 10 x single (SQLite)", _batch_over_single),
    Target("W3 p50 <= 20 ms (SQLite)", _latency),
    Target("W5 4 processes not slower than 1 (SQLite)", _processes),
    Target("W5 100k history within 10% of 10k (SQLite)", _history),
    Target("W5 flat RSS: <= 10% growth over the run (SQLite)", _memory),
)
