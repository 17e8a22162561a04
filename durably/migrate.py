"""Schema migrations: Alembic, run programmatically, with durably's own version table.

``durably.migrate()`` upgrades to the newest revision shipped with this
version of durably. The whole upgrade runs in one ``BEGIN IMMEDIATE``
transaction (SQLite DDL is transactional), so processes that migrate at the
same moment are serialised: the first applies the revisions, the others
then find the schema current and do nothing. PostgreSQL's DDL is
transactional too, but its transactions do not exclude each other: there the
upgrade first takes a transaction-scoped advisory lock (:data:`MIGRATION_LOCK`).

The revisions live in the repo's top-level ``migrations/`` directory; the
wheel ships them as ``durably/_migrations``.

Where durably's schema version is recorded
------------------------------------------
Usually in durably's own version table, ``durably_alembic_version``: the one
``migrate()`` and the checkout's ``alembic upgrade head`` write. A host
application may instead put durably's revisions into its own Alembic history
(:func:`alembic_version_location` in its ``version_locations``); its
``alembic upgrade heads`` then records durably's head as one row of *its*
version table, ``alembic_version``, next to its own heads. Every durably
revision id starts with ``durably_`` (:data:`REVISION_PREFIX`), which is how
durably tells its row there from the host's rows, including a row of a newer
durably. :func:`recorded_revision` is the one place that looks in both
tables; :func:`check` and :func:`upgrade` act on what it finds. The schema
must be recorded in exactly one of them, because two records would drift
apart with the next upgrade.

Revision ids
------------
Revision ``NNNN`` (file ``migrations/versions/NNNN_<slug>.py``) has the id
``durably_NNNN`` and revises ``durably_<NNNN - 1>``: one linear chain, whose
first revision carries the branch label ``durably``. Make the next one with
``alembic revision --rev-id durably_0007 -m "..."`` in the checkout (Alembic
would pick a random id) and name its file ``0007_<slug>.py``;
tests/behaviour/test_host_alembic.py checks the chain. The first revisions
were released as plain ``0001``...``0005``, ids any host history may use
too: :func:`rename_legacy_revisions` rewrites them where they are recorded.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .errors import SchemaError
from .schema import VERSION_TABLE, runs
from .storage import AnyDatabase

REVISION_PREFIX = "durably_"
"""The start of every durably revision id; no other Alembic history's ids start with it."""

HOST_VERSION_TABLE = "alembic_version"
"""Alembic's default version table: where a host's ``alembic upgrade heads`` records durably."""

MIGRATION_LOCK = "durably.migrate"
"""The PostgreSQL advisory lock (``hashtext`` of this) held by the transaction that upgrades."""

LEGACY_REVISIONS: dict[str, str] = {
    "0001": "durably_0001",
    "0002": "durably_0002",
    "0003": "durably_0003",
    "0004": "durably_0004",
    "0005": "durably_0005",
    # Never released under its old id, but databases made from a checkout may have it.
    "0006": "durably_0006",
}
"""Revision ids durably used before they became unique -> the same revision's id now."""


def script_location() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise SchemaError("durably's migration scripts are missing from this installation")


def alembic_version_location() -> str:
    """The directory of durably's Alembic revisions, for a host's ``version_locations``.

    Add it to the ``version_locations`` of your application's Alembic
    configuration and ``alembic upgrade heads`` creates and upgrades
    durably's tables along with your own; ``durably.migrate()`` then finds
    them current and workers start (docs/deployment.md). It is the
    ``versions`` directory inside the wheel (``durably/_migrations``) or, in
    a checkout, the repository's ``migrations/versions``.
    """
    return str(Path(script_location()) / "versions")


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


class Recorded(NamedTuple):
    """durably's schema version as one version table records it."""

    table: str
    stored: str
    """The id as the table has it: possibly a legacy id (:data:`LEGACY_REVISIONS`)."""

    @property
    def revision(self) -> str:
        return LEGACY_REVISIONS.get(self.stored, self.stored)

    @property
    def in_host_history(self) -> bool:
        return self.table == HOST_VERSION_TABLE


def _versions(conn: Connection, table: str) -> list[str]:
    if not sa.inspect(conn).has_table(table):
        return []
    return list(conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())


def recorded_revision(conn: Connection) -> Recorded | None:
    """Where durably's schema version is recorded and what it is; None if nowhere.

    Raises :class:`SchemaError` if it is recorded more than once, or if
    durably's tables exist but no version table records them (a host
    environment with another ``version_table``): upgrading from "nothing"
    would then fail half-way on a table that already exists.
    """
    found = [Recorded(VERSION_TABLE, v) for v in _versions(conn, VERSION_TABLE)]
    found += [
        Recorded(HOST_VERSION_TABLE, v)
        for v in _versions(conn, HOST_VERSION_TABLE)
        if v.startswith(REVISION_PREFIX)
    ]
    if len(found) > 1:
        where = ", ".join(f"{r.stored} in {r.table}" for r in found)
        raise SchemaError(
            f"durably's schema version is recorded more than once ({where}). Keep one: if "
            f"your application's Alembic history manages durably's tables, drop {VERSION_TABLE}"
        )
    if found:
        return found[0]
    if sa.inspect(conn).has_table(runs.name):
        raise SchemaError(
            f"durably's tables exist but neither {VERSION_TABLE} nor {HOST_VERSION_TABLE} "
            "records their revision; an Alembic environment that manages them must keep "
            f"its history in {HOST_VERSION_TABLE}"
        )
    return None


def rename_legacy_revisions(conn: Connection) -> None:
    """Rewrite a legacy revision id in durably's version table to the same revision's new id.

    Called by migrations/env.py before Alembic reads the table, in the
    transaction of the upgrade, because Alembic refuses ids its scripts do
    not define. Only durably's own table can hold one: a host history never
    had durably's revisions before they got unique ids.
    """
    for stored in _versions(conn, VERSION_TABLE):
        if stored in LEGACY_REVISIONS:
            conn.execute(
                sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :new WHERE version_num = :old"),
                {"new": LEGACY_REVISIONS[stored], "old": stored},
            )


def _check_not_newer(recorded: Recorded) -> None:
    known, _head = known_revisions()
    if recorded.revision not in known:
        raise SchemaError(
            f"The database schema (revision {recorded.stored}) is newer than this version of "
            "durably knows; upgrade durably instead of running an older version against it"
        )


def _require_head(recorded: Recorded) -> None:
    """Raise :class:`SchemaError` unless ``recorded`` is this version's head, as its new id.

    A legacy id counts as older even where it names the head: ``migrate()``
    records the new id, and Alembic's tools need it.
    """
    _known, head = known_revisions()
    if recorded.stored == head:
        return
    if recorded.in_host_history:
        remedy = (
            "durably's revisions are in your application's Alembic history "
            f"({HOST_VERSION_TABLE}): run its `alembic upgrade heads`"
        )
    else:
        remedy = "call durably.migrate() to upgrade it"
    raise SchemaError(
        f"The database schema (revision {recorded.stored}) is older than this version of "
        f"durably (revision {head}): {remedy}"
    )


def upgrade(db: AnyDatabase) -> None:
    """Bring the schema to head; idempotent and safe to run from many processes at once.

    A schema recorded in the host's Alembic history is upgraded by the host's
    ``alembic upgrade heads``, never here: durably's scripts do not know the
    host's revisions in that table, and Alembic refuses a table it cannot read.
    At head it needs nothing, so ``migrate()`` does nothing.
    """

    # At head there is nothing to write: a read says so without waiting for
    # the write lock, which a busy host application may hold most of the time.
    current = db.read(recorded_revision)
    if current is not None and current.stored == known_revisions()[1]:
        return

    def _upgrade(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(MIGRATION_LOCK))))
        recorded = recorded_revision(conn)
        if recorded is not None:
            _check_not_newer(recorded)
            if recorded.in_host_history:
                _require_head(recorded)
                return
        command.upgrade(alembic_config(conn), "head")

    db.write(_upgrade)


def check(db: AnyDatabase) -> None:
    """Raise :class:`SchemaError` unless the schema is exactly this version's head."""
    recorded = db.read(recorded_revision)
    if recorded is None:
        raise SchemaError(
            "The durably tables do not exist in this database: call durably.migrate() "
            "(or run `alembic upgrade head`) first"
        )
    _check_not_newer(recorded)
    _require_head(recorded)
