"""Jobs are typed from their models or functions: ``trigger``'s input and ``run.output``.

The typed example runs for real, then ``mypy --strict`` checks it together
with uses that must be refused (a wrong input, an output read without its
None check). The expected errors are matched exactly, so a job type that
decays to ``Any`` fails here as surely as a wrong one.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

USES = """
from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import assert_type

from durably import AsyncStepContext, Durably, Job, Run, StepContext
from typed_jobs import Order, Receipt, checkout

durably = Durably("sqlite://")


@dataclass
class Ping:
    host: str


@durably.job("ping", input=Ping)
def ping(step: StepContext, ping: Ping) -> float:
    return 0.5


@durably.job("pong", output=Receipt)
async def pong(step: AsyncStepContext, text: str) -> dict[str, str]:
    return {"order_id": text, "total": "1"}


@durably.job("plain")
def plain(step: StepContext, n: int) -> list[int]:
    return [n]


assert_type(checkout, Job[Order, Receipt])
assert_type(ping, Job[Ping, float])
assert_type(pong, Job[str, Receipt])
assert_type(plain, Job[int, list[int]])
assert_type(checkout.trigger(Order(id="A", prices=[])), Run[Receipt])
assert_type(plain.trigger_and_wait(3).output, list[int] | None)
assert_type(durably.get_run("x"), Run | None)

checkout.trigger(42)  # refused: LINE-WRONG-INPUT
ping.trigger(Ping(host="h")).output + "s"  # refused: LINE-WRONG-OUTPUT
"""


def test_the_typed_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLY_DATABASE_URL", f"sqlite:///{tmp_path / 'typed.db'}")
    spec = importlib.util.spec_from_file_location("typed_jobs_example", EXAMPLES / "typed_jobs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Importable by name, as an application's module is: stored models name their class.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    try:
        receipt = module.main()
    finally:
        module.durably.close()
    assert receipt == module.Receipt(order_id="A-17", total=module.Decimal("10.00"))


def _line_of(marker: str) -> int:
    return next(n for n, line in enumerate(USES.splitlines(), 1) if marker in line)


def test_mypy_strict_types_jobs_from_their_models(tmp_path: Path) -> None:
    uses = tmp_path / "uses.py"
    uses.write_text(USES)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            "",
            "--python-version",
            "3.10",
            str(EXAMPLES / "typed_jobs.py"),
            str(uses),
        ],
        cwd=tmp_path,
        env={"MYPYPATH": str(EXAMPLES), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = sorted(
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^.*uses\.py:(\d+): error: (.*)$", result.stdout, re.MULTILINE)
    )
    others = [
        line for line in result.stdout.splitlines() if ": error:" in line and "uses.py" not in line
    ]
    assert others == [], result.stdout
    assert [line for line, _ in errors] == [
        _line_of("LINE-WRONG-INPUT"),
        _line_of("LINE-WRONG-OUTPUT"),
        _line_of("LINE-WRONG-OUTPUT"),
    ], result.stdout
    assert 'incompatible type "int"; expected "Order"' in errors[0][1]
