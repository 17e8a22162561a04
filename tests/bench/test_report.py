"""The benchmark's ratios: what the performance page and the targets table rest on."""

from __future__ import annotations

from bench.report import Case, Outcome, Result, paired_ratio, table
from bench.targets import TARGETS


def _result(case_id: str, rates: dict[int, float], floor: str | None = None) -> Result:
    result = Result(Case(case_id, "W1", case_id, "sqlite", "NORMAL", None, floor=floor))
    for repetition, rate in rates.items():
        result.add(Outcome({"triggers/s": rate}), repetition)
    return result


def test_a_ratio_to_the_floor_pairs_the_measurements_of_each_repetition() -> None:
    # The machine slowed down by half in the second repetition, for both.
    floor = _result("floor/w1-single/NORMAL", {0: 20_000, 1: 10_000, 2: 18_000})
    mine = _result("thread/w1-single/sqlite/NORMAL", {0: 8_000, 1: 4_000, 2: 7_200}, floor.case.id)
    assert paired_ratio(mine, floor, "triggers/s") == 0.4
    # The ratio of the medians would say 0.4 too here, but not once a
    # repetition is missing on one side: only repetitions with both count.
    mine_failed_once = _result("thread", {1: 4_000, 2: 7_200}, floor.case.id)
    assert paired_ratio(mine_failed_once, floor, "triggers/s") == 0.4
    assert paired_ratio(_result("none", {}), floor, "triggers/s") is None
    assert "| 0.40 |" in table([floor, mine])


def test_the_targets_table_judges_paired_ratios() -> None:
    floor = _result("floor/w1-single/NORMAL", {0: 20_000, 1: 10_000, 2: 18_000})
    single = _result("thread/w1-single/sqlite/NORMAL", {0: 10_000, 1: 5_000, 2: 9_000})
    batch = _result("thread/w1-batch/sqlite/NORMAL", {0: 30_000, 1: 60_000, 2: 27_000})
    results = {r.case.id: r for r in (floor, single, batch)}
    verdicts = {t.goal: t.judge(results) for t in TARGETS}
    assert verdicts["W1 single trigger >= 0.5 x floor (SQLite)"] == (
        "9,000 vs 18,000 triggers/s (medians); paired 0.50x",
        True,
    )
    # Batch over single is 3, 12 and 3 by repetition: 3.00x, where the
    # medians (30k over 9k) would say 3.33x.
    assert verdicts["W1 batch >= 10 x single (SQLite)"] == (
        "30,000 vs 9,000 triggers/s (medians); paired 3.00x",
        False,
    )
    assert verdicts["W3 p50 <= 20 ms (SQLite)"] is None  # not measured

    # With the floor's batch measured, the row also shows the floor's own ratio.
    floor_batch = _result("floor/w1-batch/NORMAL", {0: 100_000, 1: 60_000, 2: 126_000})
    results[floor_batch.case.id] = floor_batch
    verdicts = {t.goal: t.judge(results) for t in TARGETS}
    assert verdicts["W1 batch >= 10 x single (SQLite)"] == (
        "30,000 vs 9,000 triggers/s (medians); paired 3.00x; the floor's own: 6.00x",
        False,
    )


def test_a_ratio_just_short_of_its_goal_is_not_rounded_up_to_it() -> None:
    floor = _result("floor/w1-single/NORMAL", {0: 20_000})
    single = _result("thread/w1-single/sqlite/NORMAL", {0: 9_960})
    verdicts = {t.goal: t.judge({r.case.id: r for r in (floor, single)}) for t in TARGETS}
    assert verdicts["W1 single trigger >= 0.5 x floor (SQLite)"] == (
        "9,960 vs 20,000 triggers/s (medians); paired 0.498x",
        False,
    )
