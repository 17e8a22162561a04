"""Django, set up once for the tests in this folder: the example shop's project, the tests'
settings (``tests/django/settings.py``), and durably's tables in a temporary directory.

There is no ``__init__.py`` here on purpose: a package named ``django`` in a folder
pytest puts on ``sys.path`` would hide the real one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the session's project keeps db.sqlite3 and durably.sqlite3; Django is set up."""
    import django

    path = tmp_path_factory.mktemp("django-project")
    os.environ["SHOP_DATA_DIR"] = str(path)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    sys.path.insert(0, str(PROJECT))
    django.setup()
    from durably.contrib.django import get_durably

    durably = get_durably()
    durably.migrate()
    yield path
    durably.close()
