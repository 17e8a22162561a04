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


Judge = Callable[[Results], tuple[str, bool] | None]


def _at_least(mine_id: str, base_id: str, metric: str, minimum: float) -> Judge:
    """Met when ``mine / base`` for ``metric``, paired by repetition, is at least ``minimum``."""

    def judge(results: Results) -> tuple[str, bool] | None:
        mine, base = results.get(mine_id), results.get(base_id)
        if mine is None or base is None:
            return None
        ratio = paired_ratio(mine, base, metric)
        mine_median, base_median = mine.median(metric), base.median(metric)
        if ratio is None or mine_median is None or base_median is None:
            return None
        medians = f"{number(mine_median)} vs {number(base_median)} {metric}"
        return f"{medians} (medians); paired {_ratio(ratio, minimum)}x", ratio >= minimum

    return judge


def _with_the_floors_own(judge: Judge, workload: str, base_workload: str, metric: str) -> Judge:
    """``judge``, followed by the same paired ratio for the floor's cases, when measured.

    For a goal between two of durably's cases (batch over single triggers):
    the floor's own ratio shows how far the machine's SQLite allows it.
    """

    def with_floor(results: Results) -> tuple[str, bool] | None:
        verdict = judge(results)
        mine, base = results.get(floor_id(workload)), results.get(floor_id(base_workload))
        if verdict is None or mine is None or base is None:
            return verdict
        ratio = paired_ratio(mine, base, metric)
        if ratio is None:
            return verdict
        text, met = verdict
        return f"{text}; the floor's own: {ratio:.2f}x", met

    return with_floor


def _ratio(ratio: float, minimum: float) -> str:
    """Two decimals, or three where two would round a miss up to the goal (0.397 is not 0.40)."""
    shown = f"{ratio:.2f}"
    return shown if (float(shown) >= minimum) == (ratio >= minimum) else f"{ratio:.3f}"


def _sqlite(engine: str, workload: str) -> str:
    return durably_id(engine, workload, "sqlite")


def _latency(results: Results) -> tuple[str, bool] | None:
    p50 = _median(results, _sqlite("thread", "w3"), "p50 ms")
    if p50 is None:
        return None
    return f"p50 {number(p50)} ms", p50 <= 20


def _memory(results: Results) -> tuple[str, bool] | None:
    growth = _median(results, _sqlite("procs", "w5-memory"), "RSS growth %")
    peak = _median(results, _sqlite("procs", "w5-memory"), "peak RSS MB")
    if growth is None or peak is None:
        return None
    return f"peak {number(peak)} MB, {growth:+.1f}% from 25% of the runs to the end", growth <= 10


TARGETS = (
    Target(
        "W2 thread engine >= 0.5 x floor (SQLite, NORMAL)",
        _at_least(_sqlite("thread", "w2"), floor_id("w2"), "runs/s", 0.5),
    ),
    Target(
        "W2 asyncio engine >= 0.4 x floor (SQLite, NORMAL)",
        _at_least(_sqlite("asyncio", "w2"), floor_id("w2"), "runs/s", 0.4),
    ),
    Target(
        "W2 thread engine >= 3 x DBOS (SQLite, NORMAL)",
        _at_least(_sqlite("thread", "w2"), peer_id("dbos", "w2"), "runs/s", 3),
    ),
    Target(
        "W2 asyncio engine >= 3 x DBOS (SQLite, NORMAL)",
        _at_least(_sqlite("asyncio", "w2"), peer_id("dbos", "w2"), "runs/s", 3),
    ),
    Target(
        "W1 single trigger >= 0.5 x floor (SQLite)",
        _at_least(_sqlite("thread", "w1-single"), floor_id("w1-single"), "triggers/s", 0.5),
    ),
    Target(
        "W1 batch >= 10 x single (SQLite)",
        _with_the_floors_own(
            _at_least(
                _sqlite("thread", "w1-batch"), _sqlite("thread", "w1-single"), "triggers/s", 10
            ),
            "w1-batch",
            "w1-single",
            "triggers/s",
        ),
    ),
    Target("W3 p50 <= 20 ms (SQLite)", _latency),
    Target(
        "W5 4 processes not slower than 1 (SQLite)",
        _at_least(_sqlite("procs", "w5-procs-4"), _sqlite("procs", "w5-procs-1"), "runs/s", 1.0),
    ),
    Target(
        "W5 100k history within 10% of 10k (SQLite)",
        _at_least(
            _sqlite("thread", "w5-history-100000"),
            _sqlite("thread", "w5-history-10000"),
            "runs/s",
            0.9,
        ),
    ),
    Target("W5 flat RSS: <= 10% growth over the run (SQLite)", _memory),
)
