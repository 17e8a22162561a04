"""``settings.DURABLY``: where durably's tables go, and its options, checked as it is built."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from durably import ValidationError


@contextmanager
def settings(**values: Any) -> Iterator[None]:
    from django.test import override_settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Django warns that DATABASES is read at startup
        with override_settings(**values):
            yield


def test_the_project_has_one_durably_with_its_jobs_and_the_tasks_job(data_dir: Path) -> None:
    from durably.contrib.django import get_durably

    durably = get_durably()
    assert get_durably() is durably
    assert {"django.tasks", "daily-report", "testapp-double"} <= set(durably.jobs)
    assert durably.engine.url.database == str(data_dir.resolve() / "durably.sqlite3")


def test_url_and_options_come_from_the_setting(data_dir: Path, tmp_path: Path) -> None:
    from durably.contrib.django import build_durably

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with settings(DURABLY={"URL": url, "MAX_CONCURRENT_RUNS": 3, "POLLING_INTERVAL": 0.5}):
        durably = build_durably()
    with durably:
        assert durably.engine.url.database == str(tmp_path / "jobs.db")
        assert durably.settings.max_concurrent_runs == 3
        assert durably.settings.polling_interval == 0.5
        assert "django.tasks" in durably.jobs


def test_by_default_a_file_beside_the_sqlite_database(data_dir: Path, tmp_path: Path) -> None:
    from durably.contrib.django import build_durably

    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "site" / "db.sqlite3"}
    with settings(DURABLY={}, DATABASES={"default": database}):
        durably = build_durably()
    with durably:
        assert durably.engine.url.database == str(tmp_path.resolve() / "site" / "durably.sqlite3")


def test_with_another_database_a_file_in_base_dir(data_dir: Path, tmp_path: Path) -> None:
    from durably.contrib.django import build_durably

    mysql = {"default": {"ENGINE": "django.db.backends.mysql", "NAME": "shop"}}
    with settings(DURABLY={}, DATABASES=mysql, BASE_DIR=tmp_path):
        durably = build_durably()
    with durably:
        assert durably.engine.url.database == str(tmp_path.resolve() / "durably.sqlite3")
    with (
        settings(DURABLY={}, DATABASES=mysql, BASE_DIR=None),
        pytest.raises(ValidationError, match=r'Set settings.DURABLY = \{"URL"'),
    ):
        build_durably()


@pytest.mark.parametrize(
    "backend", ["django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"]
)
def test_on_postgresql_the_project_s_own_database(data_dir: Path, backend: str) -> None:
    from durably.contrib.django import build_durably

    database = {
        "ENGINE": backend,
        "NAME": "shop",
        "USER": "shop",
        "PASSWORD": "p@ss/word:1",
        "HOST": "db.internal",
        "PORT": "6432",
        # Django's own keys shape its connection, not durably's: they stay behind.
        "OPTIONS": {"sslmode": "require", "connect_timeout": 5, "pool": True, "isolation_level": 1},
    }
    with settings(DURABLY={}, DATABASES={"default": database}):
        durably = build_durably()
    with durably:
        url = durably.engine.url
        assert (url.drivername, url.username, url.password) == (
            "postgresql+psycopg",
            "shop",
            "p@ss/word:1",
        )
        assert (url.host, url.port, url.database) == ("db.internal", 6432, "shop")
        assert dict(url.query) == {"sslmode": "require", "connect_timeout": "5"}


def test_a_postgresql_socket_directory_is_the_host_parameter(data_dir: Path) -> None:
    from durably.contrib.django import build_durably

    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "HOST": "/run/postgresql",
    }
    with settings(DURABLY={}, DATABASES={"default": database}):
        durably = build_durably()
    with durably:
        assert durably.engine.url.host is None
        assert dict(durably.engine.url.query) == {"host": "/run/postgresql"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("OPTIONS", {"sslcontext": object()}, r"OPTIONS'\]\['sslcontext'\] is not a connection"),
        ("PORT", "fivefour", r"PORT'\] is not a port number: 'fivefour'"),
    ],
)
def test_postgresql_settings_durably_cannot_use_are_named(
    data_dir: Path, field: str, value: Any, message: str
) -> None:
    from durably.contrib.django import build_durably

    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", field: value}
    with (
        settings(DURABLY={}, DATABASES={"default": database}),
        pytest.raises(ValidationError, match=message),
    ):
        build_durably()


@pytest.mark.parametrize("key", ["POLL_EVERY", "url", "max_concurrent_runs"])
def test_an_unknown_key_is_refused_by_name(data_dir: Path, key: str) -> None:
    from durably.contrib.django import build_durably

    with (
        settings(DURABLY={key: 1}),
        pytest.raises(ValidationError, match=rf"Unknown key '{key}' in settings.DURABLY"),
    ):
        build_durably()


def test_an_invalid_option_is_durablys_own_error(data_dir: Path) -> None:
    from durably.contrib.django import build_durably

    with settings(DURABLY={"MAX_CONCURRENT_RUNS": 0}), pytest.raises(ValidationError):
        build_durably()
