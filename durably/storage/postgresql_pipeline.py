"""A write batch in one round trip to the server: psycopg's pipeline mode.

Sent one by one, each statement of a batch (and the ``BEGIN`` psycopg sends
before the first) waits for the server's reply before the next goes out: a
step's two ``INSERT`` statements cost three round trips before ``COMMIT``.
In pipeline mode they all go out at once and the replies are read together
at the end, so a batch costs two round trips whatever its length: the
pipeline, then ``COMMIT``.

``COMMIT`` stays out of the pipeline on purpose: a connection found dead by
the pipeline has then committed nothing, and the batch may be sent again
(see :mod:`durably.storage.postgresql`); with ``COMMIT`` inside, a dead
connection's batch could not be told from one whose ``COMMIT`` was lost.

The statements run on the driver's connection, under SQLAlchemy's
transaction, so SQLAlchemy does not see the errors they raise: they are
wrapped here as SQLAlchemy would (:class:`sqlalchemy.exc.DBAPIError`,
``connection_invalidated`` when the connection is gone, and then the
connection and the pool's others are thrown away, as SQLAlchemy does after
a disconnect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Compiled, Connection
from sqlalchemy.sql.dml import UpdateBase

from .statements import Batch, Outcome


class StatementCache(Protocol):
    def get(self, statement: UpdateBase) -> Compiled: ...


def run_pipelined(conn: Connection, batch: Batch, cache: StatementCache) -> list[Outcome]:
    """Run ``batch`` in ``conn``'s transaction, all its statements sent before any reply is read."""
    driver = conn.connection.driver_connection
    assert driver is not None
    sent: list[Any] = []
    try:
        with driver.pipeline():
            for statement, params in batch:
                sent.append(_send(driver, cache.get(statement), params))
    except driver.Error as exc:
        raise _wrapped(conn, exc, batch, cache) from exc
    return [_outcome(cursor) for cursor in sent]


def _send(driver: Any, compiled: Compiled, params: Any) -> Any:
    if isinstance(params, Mapping):
        cursor = driver.cursor()
        cursor.execute(compiled.string, compiled.construct_params(params))
        return cursor
    if params:
        cursor = driver.cursor()
        cursor.executemany(compiled.string, [compiled.construct_params(one) for one in params])
        return cursor
    return None


def _outcome(cursor: Any) -> Outcome:
    if cursor is None:
        return Outcome(0)
    if cursor.description is None:
        return Outcome(cursor.rowcount)
    names = [column.name for column in cursor.description]
    rows: Sequence[Mapping[str, Any]] = [
        dict(zip(names, row, strict=True)) for row in cursor.fetchall()
    ]
    return Outcome(cursor.rowcount, rows)


def _wrapped(
    conn: Connection, exc: Exception, batch: Batch, cache: StatementCache
) -> sa.exc.DBAPIError:
    driver = conn.connection.driver_connection
    gone = conn.dialect.is_disconnect(exc, driver, None)
    statements = "; ".join(cache.get(statement).string for statement, _ in batch)
    error = sa.exc.DBAPIError.instance(
        statements, None, exc, type(driver).Error, connection_invalidated=gone
    )
    if gone:
        conn.invalidate(exc)
        # The server restarted or dropped this process's backends: the pool's
        # other connections are as likely gone (what SQLAlchemy does too).
        conn.engine.dispose()
    return error
