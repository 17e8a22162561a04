"""Sending a write batch to a libSQL server: the whole transaction in one request.

One round trip per batch, and a process that dies mid-way leaves no
transaction open on the server (see
:meth:`durably.hrana.dbapi.Connection.execute_transaction`). The only
module of the storage layer that knows the Hrana driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import PoolProxiedConnection

from ..hrana import dbapi as hrana_dbapi
from .statements import Compiled, Outcome


def send_batch(pooled: PoolProxiedConnection, statements: Sequence[Compiled]) -> list[Outcome]:
    raw: Any = pooled.dbapi_connection
    try:
        results = iter(
            raw.execute_transaction(
                [
                    (statement.prepared.sql, args)
                    for statement in statements
                    for args in statement.args
                ]
            )
        )
    except hrana_dbapi.Error as exc:
        if exc.connection_lost:
            pooled.invalidate()
        raise sa.exc.DBAPIError.instance(
            None, None, exc, hrana_dbapi.Error, connection_invalidated=exc.connection_lost
        ) from exc
    outcomes = []
    for statement in statements:
        if statement.many:
            count = sum(next(results).affected_row_count for _ in statement.args)
            outcomes.append(Outcome(count))
        else:
            result = next(results)
            rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
            outcomes.append(Outcome(result.affected_row_count, rows))
    return outcomes


def is_transaction_lost(exc: BaseException) -> bool:
    """The server dropped the stream and rolled the whole transaction back: send it again."""
    return isinstance(getattr(exc, "orig", None), hrana_dbapi.TransactionLost)
