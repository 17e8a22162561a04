"""This folder's tests again, on Django 6.1 and its own ``django.tasks``, from .venv-django6.

.venv runs them on Django 5.2 with the django-tasks backport (Python 3.10 and
3.11 have no Django 6); ``make test`` makes .venv-django6 with a Python 3.12+
it finds. Without that venv the run is skipped, with one line, except under
CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import django
import pytest

ROOT = Path(__file__).resolve().parents[2]
DJANGO6_PYTHON = ROOT / ".venv-django6" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_django_tests_pass_on_django_6_1() -> None:
    if django.VERSION >= (6, 0):
        pytest.skip("this is the Django 6 run")
    if not DJANGO6_PYTHON.exists():
        missing = "no .venv-django6 (make test makes it from a Python 3.12+)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"The Django 6.1 tests must run under CI: {missing}")
        pytest.skip(f"Django 6.1 tests skipped: {missing}")
    version = subprocess.run(
        [str(DJANGO6_PYTHON), "-c", "import django; print(django.get_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("6.1"), version
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_", "SHOP_"))}
    ran = subprocess.run(
        [str(DJANGO6_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/django"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-2000:]
    assert " passed" in ran.stdout.splitlines()[-1]
