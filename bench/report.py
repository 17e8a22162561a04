"""Collecting repeated measurements and printing them as markdown.

A :class:`Case` is one line of the bench (a workload, on one system, driver
and durability setting); each repetition yields an :class:`Outcome` with one
value per metric. The table shows the median and the spread (min-max) of
each metric over the repetitions and, where a floor case measured the same
metric in the same run, the ratio to it: the median of the ratios of each
repetition, in which the two were measured seconds apart (:func:`paired_ratio`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

LOWER_IS_BETTER = frozenset({"p50 ms", "p95 ms", "s to recover", "peak RSS MB", "RSS growth %"})


@dataclass(frozen=True)
class Outcome:
    values: dict[str, float]
    done: int | None = None
    """Items (triggers, runs) actually done, when a time cap may stop the workload early."""
    planned: int | None = None


@dataclass(frozen=True)
class Case:
    id: str
    workload: str
    system: str
    driver: str
    setting: str
    run: Callable[[Path], Outcome] | None
    """Called with a fresh, empty directory for its database files."""
    skip: str | None = None
    """Why the case is not measured (shown instead of figures)."""
    floor: str | None = None
    """The id of the case whose metrics of the same name are this case's baseline."""
    max_repeats: int | None = None


@dataclass
class Result:
    case: Case
    values: dict[str, list[float]] = field(default_factory=dict)
    by_repetition: dict[int, dict[str, float]] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    planned: int | None = None
    error: str | None = None

    def add(self, outcome: Outcome, repetition: int) -> None:
        self.by_repetition[repetition] = outcome.values
        for metric, value in outcome.values.items():
            self.values.setdefault(metric, []).append(value)
        if outcome.done is not None:
            self.done.append(outcome.done)
            self.planned = outcome.planned

    def median(self, metric: str) -> float | None:
        values = self.values.get(metric)
        return statistics.median(values) if values else None

    @property
    def note(self) -> str:
        """``capped: 361-520 of 2,000`` when the time cap stopped any repetition early.

        Also names the error of a repetition that failed while others succeeded.
        """
        notes = [self.error] if self.error else []
        if self.planned is not None and self.done and min(self.done) < self.planned:
            low, high = min(self.done), max(self.done)
            done = f"{low:,}" if low == high else f"{low:,}-{high:,}"
            notes.insert(0, f"capped: {done} of {self.planned:,}")
        return "; ".join(notes)


def number(value: float) -> str:
    """Three significant figures at most, thousands separated: 41,200 / 812 / 3.47 / 0.052."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def paired_ratio(mine: Result, base: Result, metric: str) -> float | None:
    """``mine / base`` for ``metric``: the median of the ratios of each repetition.

    A repetition measures every case once, so a case and its floor are
    measured seconds apart, and a slow phase of a shared machine slows both.
    The ratio of two medians would divide figures taken at different moments:
    on this 2-core VM the W1 floor alone ranged over 14.5k-24k triggers/s
    within one run. Only repetitions that measured both count.
    """
    ratios = [
        values[metric] / base_values[metric]
        for repetition, values in mine.by_repetition.items()
        if (base_values := base.by_repetition.get(repetition)) is not None
        and metric in values
        and base_values.get(metric)
    ]
    return statistics.median(ratios) if ratios else None


def _ratio(result: Result, metric: str, floors: dict[str, Result]) -> str:
    floor = floors.get(result.case.floor or "")
    ratio = None if floor is None else paired_ratio(result, floor, metric)
    return "" if ratio is None else f"{ratio:.2f}"


def table(results: Iterable[Result]) -> str:
    """The markdown table: one row per case and metric."""
    results = list(results)
    by_id = {result.case.id: result for result in results}
    lines = [
        "| workload | system | driver | sync | metric | median | spread (min-max) | x floor | n |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        case = result.case
        head = f"| {case.workload} | {case.system} | {case.driver} | {case.setting} "
        if case.skip or not result.values:
            reason = case.skip or result.error or "no result"
            lines.append(f"{head}| {reason} | | | | |")
            continue
        for index, (metric, values) in enumerate(result.values.items()):
            spread = f"{number(min(values))}-{number(max(values))}" if len(values) > 1 else ""
            ratio = _ratio(result, metric, by_id)
            note = f" ({result.note})" if result.note and index == 0 else ""
            lines.append(
                f"{head}| {metric}{note} | {number(statistics.median(values))} | {spread} "
                f"| {ratio} | {len(values)} |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One goal of the issue: a description and how to judge it from the results."""

    goal: str
    judge: Callable[[dict[str, Result]], tuple[str, bool] | None]
    """(the figures it rests on, met?) or None when they were not measured."""


def targets_table(targets: Iterable[Target], results: Iterable[Result]) -> str:
    by_id = {result.case.id: result for result in results}
    lines = ["| target | measured | met |", "|---|---|---|"]
    for target in targets:
        verdict = target.judge(by_id)
        if verdict is None:
            lines.append(f"| {target.goal} | not measured | - |")
        else:
            figures, met = verdict
            lines.append(f"| {target.goal} | {figures} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)
