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

from tests.django.django_harness import PROJECT, SETTINGS


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the session's project keeps db.sqlite3 and durably.sqlite3; Django is set up."""
    import django

    path = tmp_path_factory.mktemp("django-project")
    saved = {name: os.environ.get(name) for name in ("SHOP_DATA_DIR", "DJANGO_SETTINGS_MODULE")}
    os.environ["SHOP_DATA_DIR"] = str(path)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    sys.path.insert(0, str(PROJECT))
    django.setup()
    from durably.contrib.django import get_durably

    durably = get_durably()
    durably.migrate()
    yield path
    durably.close()
    sys.path.remove(str(PROJECT))
    for name, value in saved.items():  # Django stays set up: a process sets it up once
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
