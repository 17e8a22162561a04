"""Database URLs: which driver a URL means, and where to find it in the environment.

Local files keep their driver (``sqlite:///`` → stdlib ``sqlite3``,
``sqlite+libsql:///`` → libSQL). A remote libSQL URL (``sqlite+libsql://HOST``,
or ``libsql://HOST`` / ``https://HOST`` as Turso prints them) goes to
durably's own Hrana driver, ``sqlite+hrana://HOST`` (see :mod:`durably.hrana`).
A PostgreSQL URL goes to psycopg 3 (``postgresql+psycopg://``; ``postgresql://``
and ``postgresql+psycopg_async://`` mean the same), whichever engine uses it.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from ..errors import ValidationError
from ..hrana.dialect import URL_OPTIONS

SUPPORTED_DRIVERS = ("pysqlite", "libsql")
"""``sqlite:///`` (stdlib ``sqlite3``) and ``sqlite+libsql:///`` (libSQL)."""

ASYNC_DRIVER_ALIASES = {"aiosqlite": "sqlite+pysqlite", "aiolibsql": "sqlite+libsql"}
"""Async spellings accepted for the same files: ``sqlite+aiosqlite:///`` is ``sqlite:///``."""


POSTGRESQL_DRIVERS = ("psycopg", "psycopg_async")
"""psycopg 3, the one PostgreSQL driver durably runs on (both names, one connection)."""
POSTGRESQL_DEFAULT = "psycopg2"
"""The driver SQLAlchemy picks for a bare ``postgresql://``: durably uses psycopg 3 instead."""


REMOTE_SCHEMES = {"libsql": True, "https": True, "wss": True, "http": False, "ws": False}
"""URL schemes of remote libSQL databases (as Turso prints them), and whether each means TLS."""


def make_engine_url(url: str | URL) -> URL:
    """Validate a database URL and pick the driver durably uses for it (see the module)."""
    parsed = _parse(_as_hrana(url) if isinstance(url, str) else url)
    driver = parsed.get_driver_name()
    if parsed.get_backend_name() == "postgresql":
        return _postgresql(parsed, driver)
    if driver in ASYNC_DRIVER_ALIASES:
        # One URL serves both engines: async code reaches the database through
        # durably's threads, so the blocking driver is used.
        parsed = parsed.set(drivername=ASYNC_DRIVER_ALIASES[driver])
        driver = parsed.get_driver_name()
    if parsed.host and driver == "libsql":
        parsed = parsed.set(drivername="sqlite+hrana")
        driver = "hrana"
    if driver == "hrana":
        if not parsed.host:
            raise ValidationError(
                "A remote libSQL URL needs a host: sqlite+libsql://HOST[:PORT]?secure=true"
            )
        _check_remote_options(parsed)
        return parsed
    _check_local(parsed, driver)
    return parsed


def _as_hrana(url: str) -> str:
    """``libsql://HOST`` and ``https://HOST`` (as Turso prints them) as ``sqlite+hrana://HOST``."""
    scheme, sep, rest = url.partition("://")
    if not (sep and scheme.lower() in REMOTE_SCHEMES):
        return url
    if not rest.split("?")[0].strip("/"):
        raise ValidationError(f"Invalid database URL {url!r}: it names no host")
    if "secure=" not in rest:
        secure = "true" if REMOTE_SCHEMES[scheme.lower()] else "false"
        rest = f"{rest}{'&' if '?' in rest else '?'}secure={secure}"
    return f"sqlite+hrana://{rest}"


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ValidationError(f"Invalid database URL {str(url)!r}: {exc}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValidationError(
            f"Unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "durably supports sqlite:///path.db, sqlite+libsql:///path.db, remote "
            "libSQL servers (sqlite+libsql://HOST, libsql://HOST) and PostgreSQL "
            "(postgresql+psycopg://USER:PASSWORD@HOST/DATABASE)"
        )
    return parsed


def _postgresql(parsed: URL, driver: str) -> URL:
    """A PostgreSQL URL on psycopg 3, or a clear error for another driver."""
    if driver == POSTGRESQL_DEFAULT and "+" not in parsed.drivername:
        driver = "psycopg"
    if driver not in POSTGRESQL_DRIVERS:
        raise ValidationError(
            f"Unsupported PostgreSQL driver {driver!r}: durably runs on psycopg 3, "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ValidationError(
            "PostgreSQL needs psycopg 3: pip install 'durably[postgresql]'"
        ) from None
    return parsed.set(drivername="postgresql+psycopg")


def _check_local(parsed: URL, driver: str) -> None:
    if driver not in SUPPORTED_DRIVERS:
        raise ValidationError(
            f"Unsupported SQLite driver {driver!r}; use sqlite:/// or sqlite+libsql:///"
        )
    if parsed.host:
        raise ValidationError(
            f"{parsed.render_as_string(hide_password=True)!r} names a host, but the stdlib "
            "sqlite3 driver only opens local files; use sqlite+libsql://HOST for a remote "
            "libSQL server or sqlite:///path.db for a file"
        )
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed):
        raise ValidationError(
            "In-memory SQLite databases are private to one connection and cannot be shared "
            "by durably's worker threads; use a file, e.g. sqlite:///durably.db"
        )


def _check_remote_options(url: URL) -> None:
    unknown = set(url.query) - set(URL_OPTIONS)
    if unknown:
        raise ValidationError(
            f"Unknown option(s) in the libSQL URL: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(URL_OPTIONS)})"
        )
    secure = str(url.query.get("secure", "false")).lower()
    if secure not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValidationError(f"secure={secure!r} in the libSQL URL: use secure=true or false")
    timeout = url.query.get("timeout")
    if timeout is not None:
        try:
            seconds = float(str(timeout))
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ValidationError(f"timeout={timeout!r} in the libSQL URL: use seconds, e.g. 15")


def display_url(url: URL) -> str:
    """``url`` for messages and logs: password and auth token hidden."""
    return url.difference_update_query(["auth_token", "authToken"]).render_as_string(
        hide_password=True
    )


ENV_URL = "DURABLY_DATABASE_URL"
ENV_AUTH_TOKEN = "DURABLY_AUTH_TOKEN"
TURSO_ENV_URL = "TURSO_DATABASE_URL"
TURSO_ENV_AUTH_TOKEN = "TURSO_AUTH_TOKEN"


def url_from_env(environ: Mapping[str, str], default: str | None = None) -> tuple[str, str | None]:
    """``(url, auth_token)`` from ``DURABLY_DATABASE_URL`` / ``DURABLY_AUTH_TOKEN``.

    Falls back to the pair Turso's tools print, ``TURSO_DATABASE_URL`` /
    ``TURSO_AUTH_TOKEN``, then to ``default``. A token is only returned for
    a remote URL: a local file has no use for one.
    """
    url = environ.get(ENV_URL) or environ.get(TURSO_ENV_URL) or default
    if not url:
        raise ValidationError(
            f"No database configured: set {ENV_URL} (or {TURSO_ENV_URL} and "
            f"{TURSO_ENV_AUTH_TOKEN}), e.g. {ENV_URL}=sqlite:///durably.db"
        )
    token = environ.get(ENV_AUTH_TOKEN) or environ.get(TURSO_ENV_AUTH_TOKEN) or None
    if token is not None and make_engine_url(url).get_driver_name() != "hrana":
        token = None
    return url, token
