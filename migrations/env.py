"""Alembic environment for durably's tables.

Used two ways:

* programmatically by ``durably.migrate()``, which passes an open
  connection (already inside a ``BEGIN IMMEDIATE`` transaction) through
  ``config.attributes["connection"]``;
* from the command line in a checkout: ``alembic upgrade head`` with the
  database URL in ``DURABLY_DATABASE_URL`` or ``-x url=...``.

Either way durably keeps its history in its own version table, so it never
collides with the host application's Alembic history.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from durably.schema import VERSION_TABLE, metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "DURABLY_DATABASE_URL"
    )
    if not url:
        raise SystemExit(
            "durably migrations need a database URL: set DURABLY_DATABASE_URL or pass -x url=..."
        )
    return url


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
