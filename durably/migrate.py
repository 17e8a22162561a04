"""Schema migrations: Alembic, run programmatically, with durably's own version table.

``durably.migrate()`` upgrades to the newest revision shipped with this
version of durably. The whole upgrade runs in one ``BEGIN IMMEDIATE``
transaction (SQLite DDL is transactional), so processes that migrate at the
same moment are serialised: the first applies the revisions, the others
then find the schema current and do nothing.

The revisions live in the repo's top-level ``migrations/`` directory; the
wheel ships them as ``durably/_migrations``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .errors import SchemaError
from .schema import VERSION_TABLE
from .storage import Database


def script_location() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise SchemaError("durably's migration scripts are missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    return config


@functools.lru_cache(maxsize=1)
def known_revisions() -> tuple[frozenset[str], str]:
    """(every revision this version of durably ships, the head revision)."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("durably ships no migrations")
    return frozenset(rev.revision for rev in script.walk_revisions()), head


def current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _check_not_newer(revision: str | None) -> None:
    known, _head = known_revisions()
    if revision is not None and revision not in known:
        raise SchemaError(
            f"The database schema (revision {revision}) is newer than this version of durably "
            "knows; upgrade durably instead of running an older version against it"
        )


def upgrade(db: Database) -> None:
    """Bring the schema to head; idempotent and safe to run from many processes at once."""

    def _upgrade(conn: Connection) -> None:
        _check_not_newer(current_revision(conn))
        command.upgrade(alembic_config(conn), "head")

    db.write(_upgrade)


def check(db: Database) -> None:
    """Raise :class:`SchemaError` unless the schema is exactly this version's head."""
    revision = db.read(current_revision)
    _check_not_newer(revision)
    _known, head = known_revisions()
    if revision is None:
        raise SchemaError(
            "The durably tables do not exist in this database: call durably.migrate() "
            "(or run `alembic upgrade head`) first"
        )
    if revision != head:
        raise SchemaError(
            f"The database schema (revision {revision}) is older than this version of durably "
            f"(revision {head}): call durably.migrate() to upgrade it"
        )
