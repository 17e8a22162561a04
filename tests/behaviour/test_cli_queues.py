"""``durably worker --queue``: a bad queue name is one clear line, and nothing is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("queues", [["--queue", ""], ["--queue", "ok", "--queue", "x" * 300]])
def test_worker_refuses_a_bad_queue_name_in_one_line(tmp_path: Path, queues: list[str]) -> None:
    (tmp_path / "app.py").write_text(
        "from durably import Durably\n\ndurably = Durably('sqlite:///app.db')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "durably", "worker", "app:durably", "--migrate", *queues],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result  # a usage mistake
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("durably: A queue name must be"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "app.db").exists(), "refused before the database was touched"
