"""A bad ``settings.DURABLY``: ``manage.py check`` reports ``durably.E001``, and durably's
commands say what is wrong in one line, in real ``manage.py`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.django.django_harness import PROJECT, project_env

BAD_SETTINGS = "tests.django.settings_bad_durably"
BAD = [
    pytest.param({"URL": 3}, "Invalid database URL '3'", id="url-not-a-string"),
    pytest.param({"POLL_EVERY": 1}, "Unknown key 'POLL_EVERY' in settings.DURABLY", id="unknown"),
    pytest.param(
        {"MAX_CONCURRENT_RUNS": "four"}, "max_concurrent_runs must be an integer", id="wrong-type"
    ),
    pytest.param({"SYNCHRONOUS": 3}, "Invalid synchronous setting 3", id="synchronous"),
    pytest.param(5, "settings.DURABLY must be a dict of options, not int", id="not-a-dict"),
]


def manage(*args: str, data_dir: Path, durably: Any = None) -> subprocess.CompletedProcess[str]:
    """``manage.py *args``; with ``durably``, under settings whose ``DURABLY`` is that."""
    if durably is None:
        env = project_env(data_dir)
    else:
        env = {**project_env(data_dir, BAD_SETTINGS), "BAD_DURABLY": json.dumps(durably)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("durably", "message"), BAD)
def test_manage_py_check_reports_a_bad_setting_as_durably_e001(
    data_dir: Path, durably: Any, message: str
) -> None:
    ran = manage("check", data_dir=data_dir, durably=durably)
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert "(durably.E001) " in ran.stderr
    assert message in ran.stderr
    assert "HINT: See the settings.DURABLY table" in ran.stderr


def test_a_good_setting_passes_the_check_in_the_tests_project(data_dir: Path) -> None:
    ran = manage("check", data_dir=data_dir)
    assert ran.returncode == 0, ran.stderr
    assert "System check identified no issues" in ran.stdout


@pytest.mark.parametrize("command", ["durably_worker", "durably_migrate"])
@pytest.mark.parametrize(("durably", "message"), BAD[:3])
def test_durably_commands_print_one_line_for_a_bad_setting(
    data_dir: Path, command: str, durably: Any, message: str
) -> None:
    ran = manage(command, data_dir=data_dir, durably=durably)
    assert ran.returncode == 1
    assert ran.stderr.startswith("CommandError: ")
    assert message in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
