"""Where the Django tests' project lives, and the environment of its ``manage.py`` processes."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_project"
SETTINGS = "tests.django.settings"


def project_env(data_dir: Path, settings: str = SETTINGS) -> dict[str, str]:
    """The environment of a ``manage.py`` subprocess that shares this session's files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "TURSO_"))}
    env.update(
        SHOP_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(PROJECT)]),
        PYTHONUNBUFFERED="1",
    )
    return env
