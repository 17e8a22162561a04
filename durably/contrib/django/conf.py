"""``settings.DURABLY``: the project's one ``Durably``, built on first use.

    DURABLY = {
        "URL": "sqlite:////var/app/durably.db",   # default: durably.sqlite3 beside the database
        "MAX_CONCURRENT_RUNS": 4,                  # any Durably(...) option, upper-cased
    }

Without ``URL``, durably keeps its tables where the project keeps its data.
On PostgreSQL that is the default database itself: every web process and
worker, on every machine, then shares one queue. Beside a SQLite database it
is a file of its own, ``durably.sqlite3`` in the same directory, not the
project's file: Django holds SQLite's write lock for the whole of an
``atomic()`` block, so a task enqueued inside one would wait for the lock
its own request holds. Set ``URL`` to the project's file to share it (and
enqueue with ``transaction.on_commit``). With any other database, the file
goes in ``BASE_DIR``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from sqlalchemy.engine import URL

from ...app import Durably
from ...errors import ValidationError
from . import runner

SETTING = "DURABLY"
DEFAULT_FILE_NAME = "durably.sqlite3"
POSTGRESQL_ENGINES = ("postgresql", "postgis")
"""How the ``ENGINE`` of Django's PostgreSQL backends (and GeoDjango's) ends."""
_DJANGO_ONLY_OPTIONS = frozenset(
    {"assume_role", "isolation_level", "pool", "server_side_binding"}
    | {"context", "cursor_factory", "prepare_threshold"}  # psycopg's, for Django's connection
)
"""``OPTIONS`` that configure Django's own connection object rather than the server's session."""
_OPTIONS = frozenset(inspect.signature(Durably.__init__).parameters) - {"self", "url"}
"""The settings besides ``URL``: ``Durably``'s own keyword options, upper-cased."""

_lock = threading.Lock()
_project_durably: Durably | None = None


def get_durably() -> Durably:
    """The project's ``Durably``: the one the worker, the commands and the tasks backend use.

    Built from ``settings.DURABLY`` by the first call, in any process; jobs
    modules register their jobs on it when they are imported.
    """
    global _project_durably
    with _lock:
        if _project_durably is None:
            _project_durably = build_durably()
        return _project_durably


def build_durably() -> Durably:
    """A new ``Durably`` from the settings as they are now, with the ``django.tasks`` job.

    :func:`get_durably` keeps the first one; this is for checking a
    configuration (or for tests that change the settings).
    """
    setting = getattr(settings, SETTING, None) or {}
    if not isinstance(setting, Mapping):
        raise ValidationError(
            f"settings.{SETTING} must be a dict of options, not {type(setting).__name__}"
        )
    configured: dict[str, Any] = dict(setting)
    url = configured.pop("URL", None) or default_url()
    options = {}
    for key, value in configured.items():
        option = str(key).lower()
        if option not in _OPTIONS or key != option.upper():
            known = ", ".join(sorted(name.upper() for name in _OPTIONS))
            raise ValidationError(f"Unknown key {key!r} in settings.{SETTING}; known: URL, {known}")
        options[option] = value
    try:
        durably = Durably(url, **options)
    except ValidationError as exc:  # a value durably refuses: say which setting holds it
        raise ValidationError(f"settings.{SETTING}: {exc}") from exc
    runner.register(durably)
    return durably


def setting_error() -> str | None:
    """What is wrong with ``settings.DURABLY``, or None when the project's ``Durably`` builds.

    The system check (:mod:`.checks`), the app's ``ready()`` and the
    commands ask this first, so a bad setting is one clear message rather
    than a traceback from whichever import first needed the ``Durably``.
    """
    try:
        get_durably()
    except ValidationError as exc:
        return str(exc)
    return None


def default_url() -> URL:
    """The default PostgreSQL database; ``durably.sqlite3`` beside a SQLite one; else in ``BASE_DIR``."""
    database = getattr(settings, "DATABASES", {}).get("default", {})
    engine = str(database.get("ENGINE") or "")
    if engine.endswith(POSTGRESQL_ENGINES):
        return _postgresql_url(database)
    name = str(database.get("NAME") or "")
    if engine.endswith("sqlite3") and name and not _in_memory(name):
        return _sqlite_url(Path(name).resolve().parent / DEFAULT_FILE_NAME)
    base_dir = getattr(settings, "BASE_DIR", None)
    if base_dir is None:
        raise ValidationError(
            f'Set settings.{SETTING} = {{"URL": ...}}: the default database is not a SQLite '
            "file and there is no BASE_DIR to put durably's file in"
        )
    return _sqlite_url(Path(base_dir).resolve() / DEFAULT_FILE_NAME)


def _postgresql_url(database: Mapping[str, Any]) -> URL:
    """The URL of the database Django's ``DATABASES`` entry names, on psycopg 3.

    ``OPTIONS`` go to the connection as Django passes them (``sslmode``,
    ``service``, ``options``, ...), but for those that shape Django's own
    connection object: durably keeps a pool of its own, and its transactions
    choose their isolation themselves.
    """
    query: dict[str, str] = {}
    for key, value in (database.get("OPTIONS") or {}).items():
        if key in _DJANGO_ONLY_OPTIONS:
            continue
        if not isinstance(value, (str, int, float)):
            raise ValidationError(
                f"DATABASES['default']['OPTIONS'][{key!r}] is not a connection parameter "
                f'durably can pass on; set settings.{SETTING} = {{"URL": ...}}'
            )
        query[key] = str(value)
    host = str(database.get("HOST") or "")
    if host.startswith("/"):  # a socket's directory
        query["host"], host = host, ""
    port = str(database.get("PORT") or "")
    if port and not port.isdigit():
        raise ValidationError(f"DATABASES['default']['PORT'] is not a port number: {port!r}")
    return URL.create(
        "postgresql+psycopg",
        username=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        host=host or None,
        port=int(port) if port else None,
        database=database.get("NAME") or None,
        query=query,
    )


def _in_memory(name: str) -> bool:
    return name == ":memory:" or "mode=memory" in name


def _sqlite_url(path: Path) -> URL:
    return URL.create("sqlite", database=str(path))
