"""Alembic environment for durably's tables.

Used two ways:

* programmatically by ``durably.migrate()``, which passes an open
  connection (already inside a ``BEGIN IMMEDIATE`` transaction) through
  ``config.attributes["connection"]``;
* from the command line in a checkout: ``alembic upgrade head`` with the
  database URL in ``DURABLY_DATABASE_URL`` (``DURABLY_AUTH_TOKEN``), Turso's
  ``TURSO_DATABASE_URL`` (``TURSO_AUTH_TOKEN``), or ``-x url=...``.

Either way durably keeps its history in its own version table, so it never
collides with the host application's Alembic history. (A host that puts
durably's revisions into its own history runs its own env.py instead; see
``durably.alembic_version_location()``.) A revision id recorded before ids
became unique (``0003``) is renamed first (``durably_0003``), because Alembic
refuses an id its scripts do not define.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from durably.errors import ValidationError
from durably.migrate import rename_legacy_revisions
from durably.schema import VERSION_TABLE, metadata
from durably.storage import open_database
from durably.storage.urls import ENV_URL, make_engine_url, url_from_env

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )


def _url() -> tuple[str, str | None]:
    """(database URL, auth token) from ``-x url=...`` or the environment, as durably reads it."""
    environ = dict(os.environ)
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    if x_url:
        environ[ENV_URL] = x_url
    try:
        return url_from_env(environ)
    except ValidationError as exc:
        raise SystemExit(f"durably migrations need a database URL (or -x url=...): {exc}") from None


def run_offline() -> None:
    context.configure(
        url=make_engine_url(_url()[0]),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # durably.migrate(): inside its transaction, so the rename and the
        # upgrade commit together.
        rename_legacy_revisions(connection)
        _run(connection)
        return
    url, token = _url()
    engine = open_database(url, auth_token=token).engine
    try:
        with engine.connect() as conn:
            # Committed on its own: SQLite's DDL runs in a transaction per
            # revision, and with no revision to run nothing else would commit
            # it. The renamed id is as correct as the old one if an upgrade fails.
            with conn.begin():
                rename_legacy_revisions(conn)
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
