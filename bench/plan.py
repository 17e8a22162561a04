"""What one bench run measures: the sizes and the list of cases, in table order.

Every case gets a fresh directory (so a fresh database file) per repetition.
Repetitions are interleaved (all cases once, then all again) so that a burst
of background load hits the floor and durably alike rather than one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import floor, floor_postgresql, peers, peers_postgresql, postgres, processes
from .apps import DRIVERS, STEPS, Target
from .report import Case, Outcome
from .workloads import ENGINES, Engine, ThreadEngine, Throughput, median, percentile

WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "peers")
SETTINGS = ("NORMAL", "FULL")
FLOOR = "floor (sqlite3)"
PG_FLOOR = "floor (psycopg)"
PG = postgres.DRIVER
W1_SINGLE = "W1 enqueue, one per transaction"
W1_BATCH = "W1 enqueue, one batch"
W2 = "W2 end-to-end, 4 slots"

Run = Callable[[Path], Outcome]


@dataclass(frozen=True)
class Sizes:
    enqueue: int = 5_000
    runs: int = 2_000
    latency: int = 50
    recovery_runs: int = 20
    memory_runs: int = 20_000
    history: tuple[int, ...] = (10_000, 100_000)
    processes: tuple[int, ...] = (1, 2, 4)
    cap: float = 2.0
    """Seconds after which a throughput workload stops and reports the rate of what it did.

    A rate over a shorter window is still a rate; the cap only keeps a slow
    system (or a slow build of durably) from stretching the run to an hour.
    The table says when it hit.
    """
    memory_cap: float = 15.0


FULL = Sizes()
QUICK = Sizes(enqueue=1_000, runs=500, latency=20, memory_runs=5_000, cap=1.0, memory_cap=5.0)


@dataclass(frozen=True)
class Options:
    sizes: Sizes = FULL
    workloads: tuple[str, ...] = WORKLOADS
    drivers: tuple[str, ...] = ("sqlite", "libsql")

    def with_caps(self, cap: float | None, memory_cap: float | None) -> Options:
        sizes = self.sizes
        if cap is not None:
            sizes = replace(sizes, cap=cap)
        if memory_cap is not None:
            sizes = replace(sizes, memory_cap=memory_cap)
        return replace(self, sizes=sizes)


# -- case ids: how a durably case names the floor case it is compared with -----


def floor_id(workload: str, setting: str = "NORMAL", driver: str = "sqlite") -> str:
    """The floor a case on ``driver`` is compared with: PostgreSQL's for PostgreSQL."""
    return f"floor-{PG}/{workload}/{setting}" if driver == PG else f"floor/{workload}/{setting}"


def durably_id(engine: str, workload: str, driver: str, setting: str = "NORMAL") -> str:
    return f"{engine}/{workload}/{driver}/{setting}"


def peer_id(peer: str, workload: str, setting: str = "NORMAL", driver: str = "sqlite3") -> str:
    if driver == PG:
        return f"{peer}/{workload}/{PG}/{setting}"
    return f"{peer}/{workload}/{setting}"


# -- outcomes ------------------------------------------------------------------


def rate(throughput: Throughput, metric: str, steps_per_run: int = 0) -> Outcome:
    """Throughput as an outcome; steps/s too for W2, and a note when the time cap hit."""
    values = {metric: throughput.rate}
    if steps_per_run:
        values["steps/s"] = throughput.rate * steps_per_run
    return Outcome(values, throughput.count, throughput.planned)


def latency(samples: list[float]) -> Outcome:
    return Outcome({"p50 ms": median(samples) * 1000, "p95 ms": percentile(samples, 0.95) * 1000})


def memory(result: processes.Memory, planned: int) -> Outcome:
    return Outcome(
        {
            "peak RSS MB": result.peak_mb,
            "RSS at 25% MB": result.early_mb,
            "RSS at end MB": result.final_mb,
            "RSS growth %": result.growth * 100,
        },
        result.runs,
        planned,
    )


def _target(driver: str, directory: Path, setting: str = "NORMAL") -> Target:
    """A fresh database: a file in ``directory``, or a new database on the bench's server."""
    if driver == PG:
        return Target(driver, directory / "unused", postgres.SERVER.database(setting))
    return Target(driver, directory / "durably.db")


def _pg_floor(workload: str, title: str, setting: str, run: Run) -> Case:
    return Case(floor_id(workload, setting, PG), title, PG_FLOOR, PG, setting, run)


# -- W1 ------------------------------------------------------------------------


def w1(options: Options) -> list[Case]:
    n, cap = options.sizes.enqueue, options.sizes.cap
    cases = [
        Case(
            floor_id("w1-single"),
            W1_SINGLE,
            FLOOR,
            "sqlite3",
            "NORMAL",
            lambda d: Outcome({"triggers/s": floor.enqueue_single(d / "f.db", n)}),
        ),
        Case(
            floor_id("w1-batch"),
            W1_BATCH,
            FLOOR,
            "sqlite3",
            "NORMAL",
            lambda d: Outcome({"triggers/s": floor.enqueue_batch(d / "f.db", n)}),
        ),
    ]
    if PG in options.drivers:
        cases += [
            _pg_floor(
                "w1-single",
                W1_SINGLE,
                "NORMAL",
                lambda d: Outcome({"triggers/s": floor_postgresql.enqueue_single(_pg_url(), n)}),
            ),
            _pg_floor(
                "w1-batch",
                W1_BATCH,
                "NORMAL",
                lambda d: Outcome({"triggers/s": floor_postgresql.enqueue_batch(_pg_url(), n)}),
            ),
        ]

    def single(engine: Engine, driver: str) -> Run:
        return lambda d: rate(engine.enqueue_single(_target(driver, d), n, cap), "triggers/s")

    def batch(engine: Engine, driver: str) -> Run:
        return lambda d: rate(engine.enqueue_batch(_target(driver, d), n), "triggers/s")

    for engine in ENGINES:
        for driver in options.drivers:
            for kind, title, make in (
                ("w1-single", W1_SINGLE, single),
                ("w1-batch", W1_BATCH, batch),
            ):
                cases.append(
                    _durably_case(engine, kind, title, driver, "NORMAL", make(engine, driver))
                )
    return cases + _peer_cases(options, "w1")


def _pg_url(setting: str = "NORMAL") -> str:
    return postgres.SERVER.database(setting)


def _durably_case(
    engine: Engine, workload: str, title: str, driver: str, setting: str, run: Run
) -> Case:
    return Case(
        durably_id(engine.name, workload, driver, setting),
        title,
        f"durably {engine.name}",
        driver,
        setting,
        run,
        skip=engine.unavailable(),
        floor=floor_id(workload, setting, driver) if workload.startswith(("w1", "w2")) else None,
    )


# -- W2 ------------------------------------------------------------------------


def w2(options: Options) -> list[Case]:
    runs, cap = options.sizes.runs, options.sizes.cap

    def floor_run(setting: str) -> Run:
        def run(d: Path) -> Outcome:
            value = floor.end_to_end(d / "f.db", runs, synchronous=setting)
            return Outcome({"runs/s": value, "steps/s": value * len(floor.STEPS)})

        return run

    def pg_floor_run(setting: str) -> Run:
        def run(d: Path) -> Outcome:
            value = floor_postgresql.end_to_end(_pg_url(setting), runs)
            return Outcome({"runs/s": value, "steps/s": value * len(floor.STEPS)})

        return run

    def durably_run(engine: Engine, driver: str, setting: str) -> Run:
        return lambda d: rate(
            engine.end_to_end(_target(driver, d, setting), runs, cap, setting),
            "runs/s",
            len(STEPS),
        )

    cases = [
        Case(floor_id("w2", setting), W2, FLOOR, "sqlite3", setting, floor_run(setting))
        for setting in SETTINGS
    ]
    if PG in options.drivers:
        cases += [_pg_floor("w2", W2, setting, pg_floor_run(setting)) for setting in SETTINGS]
    for engine in ENGINES:
        for driver in options.drivers:
            for setting in SETTINGS:
                run = durably_run(engine, driver, setting)
                cases.append(_durably_case(engine, "w2", W2, driver, setting, run))
    return cases + _peer_cases(options, "w2")


# -- peers (W1 and W2) -----------------------------------------------------------


def _peer_cases(options: Options, workload: str) -> list[Case]:
    """The peers on an SQLite file (DBOS, huey) and on PostgreSQL (DBOS, procrastinate)."""
    if "peers" not in options.workloads:
        return []
    sizes = options.sizes
    count = sizes.enqueue if workload == "w1" else sizes.runs
    metric, title = ("triggers/s", W1_SINGLE) if workload == "w1" else ("runs/s", W2)
    steps = 0 if workload == "w1" else len(STEPS)
    floor_workload = "w1-single" if workload == "w1" else "w2"

    def run(peer: str, driver: str, setting: str) -> Run:
        def measure(d: Path) -> Outcome:
            if driver == PG:
                raw = peers_postgresql.measure(peer, workload, _pg_url(setting), count, sizes.cap)
            else:
                raw = peers.measure(peer, workload, d, count, sizes.cap, setting)
            done = Throughput(int(raw["count"]), raw["seconds"], int(raw["planned"]))
            return rate(done, metric, steps)

        return measure

    systems = []
    if set(options.drivers) & set(DRIVERS):
        systems += [(peer, "sqlite3") for peer in peers.PEERS]
    if PG in options.drivers:
        systems += [(peer, PG) for peer in peers_postgresql.PEERS]
    cases = []
    for peer, driver in systems:
        installed = peers.version(peer)
        for setting in ("NORMAL",) if workload == "w1" else SETTINGS:
            cases.append(
                Case(
                    peer_id(peer, workload, setting, driver),
                    title,
                    f"{peer} {installed}" if installed else peer,
                    driver,
                    setting,
                    run(peer, driver, setting),
                    skip=None if installed else "not installed (make bench-peers)",
                    floor=floor_id(floor_workload, setting, driver),
                )
            )
    return cases


# -- W3 ------------------------------------------------------------------------


def w3(options: Options) -> list[Case]:
    repetitions = options.sizes.latency

    def run(engine: Engine, driver: str) -> Run:
        return lambda d: latency(engine.latency(_target(driver, d), repetitions))

    title = f"W3 latency, idle worker ({repetitions} runs)"
    return [
        _durably_case(engine, "w3", title, driver, "NORMAL", run(engine, driver))
        for engine in ENGINES
        for driver in options.drivers
    ]


# -- W4 ------------------------------------------------------------------------

PROCESSES = "durably thread, processes"


def w4(options: Options) -> list[Case]:
    config = processes.RecoveryConfig(runs=options.sizes.recovery_runs)
    title = (
        f"W4 recovery after kill -9 ({config.runs} runs, stale_threshold "
        f"{config.stale_threshold:g}s, polling {config.polling_interval:g}s)"
    )

    def run(driver: str) -> Run:
        return lambda d: Outcome({"s to recover": processes.recovery(_target(driver, d), config)})

    return [
        Case(durably_id("procs", "w4", driver), title, PROCESSES, driver, "NORMAL", run(driver))
        for driver in options.drivers
    ]


# -- W5 ------------------------------------------------------------------------


def w5(options: Options) -> list[Case]:
    sizes = options.sizes
    thread = ThreadEngine()

    def scale(driver: str, count: int) -> Run:
        return lambda d: rate(
            processes.scale(_target(driver, d), count, sizes.runs, sizes.cap), "runs/s"
        )

    def history(driver: str, runs: int) -> Run:
        return lambda d: rate(
            thread.end_to_end(_target(driver, d), sizes.runs, sizes.cap, "NORMAL", runs), "runs/s"
        )

    def rss(driver: str) -> Run:
        return lambda d: memory(
            processes.memory(_target(driver, d), sizes.memory_runs, sizes.memory_cap),
            sizes.memory_runs,
        )

    cases = []
    for driver in options.drivers:
        for count in sizes.processes:
            title = f"W5 W2 on {count} worker process{'es' if count > 1 else ''}"
            case_id = durably_id("procs", f"w5-procs-{count}", driver)
            cases.append(
                Case(
                    case_id,
                    title,
                    PROCESSES,
                    driver,
                    "NORMAL",
                    scale(driver, count),
                    floor=floor_id("w2", driver=driver),
                )
            )
        for runs in sizes.history if driver != PG else ():
            title = f"W5 W2 after {runs:,} finished runs"
            case_id = durably_id("thread", f"w5-history-{runs}", driver)
            cases.append(
                Case(
                    case_id,
                    title,
                    "durably thread",
                    driver,
                    "NORMAL",
                    history(driver, runs),
                    floor=floor_id("w2", driver=driver),
                )
            )
        if driver == PG:
            cases.append(
                Case(
                    durably_id("thread", "w5-history", driver),
                    "W5 W2 after 10,000 and 100,000 finished runs",
                    "durably thread",
                    driver,
                    "NORMAL",
                    None,
                    skip="SQLite only: the history is a prepared SQLite file",
                )
            )
        title = f"W5 memory, one worker process, {sizes.memory_runs:,} runs"
        case_id = durably_id("procs", "w5-memory", driver)
        cases.append(Case(case_id, title, PROCESSES, driver, "NORMAL", rss(driver), max_repeats=1))
    return cases


BUILDERS: dict[str, Callable[[Options], list[Case]]] = {
    "w1": w1,
    "w2": w2,
    "w3": w3,
    "w4": w4,
    "w5": w5,
}


def build(options: Options) -> list[Case]:
    """Every case of this run, grouped by workload: the table's order."""
    cases: list[Case] = []
    for name, builder in BUILDERS.items():
        if name in options.workloads:
            cases += builder(options)
    if PG in options.drivers and (reason := postgres.unavailable()) is not None:
        cases = _without_postgresql(cases, reason)
    return _merge_skipped(cases)


def _without_postgresql(cases: list[Case], reason: str) -> list[Case]:
    """The cases on PostgreSQL replaced by one row that says why none of them ran."""
    kept = [case for case in cases if case.driver != PG]
    first = next((i for i, case in enumerate(cases) if case.driver == PG), None)
    if first is None:
        return cases
    row = Case(f"{PG}/all", "every workload", "durably, floor, peers", PG, "", None, skip=reason)
    return [*kept[:first], row, *kept[first:]]


def _merge_skipped(cases: list[Case]) -> list[Case]:
    """One row, not one per driver and setting, for a workload a system cannot run."""
    merged: list[Case] = []
    first: dict[tuple[str, str, str], int] = {}
    for case in cases:
        if case.skip is None:
            merged.append(case)
            continue
        key = (case.workload, case.system, case.skip)
        if key not in first:
            first[key] = len(merged)
            merged.append(case)
            continue
        kept = merged[first[key]]
        merged[first[key]] = replace(
            kept,
            driver=_join(kept.driver, case.driver),
            setting=_join(kept.setting, case.setting),
        )
    return merged


def _join(listed: str, value: str) -> str:
    values = listed.split(", ")
    return listed if value in values else f"{listed}, {value}"
