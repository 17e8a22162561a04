"""The storage layer: the only part of durably that talks to the database.

* :mod:`~durably.storage.database`: :class:`Database`, with the three ways in
  (``write_batch``, ``write``, ``read``) and the retry policy;
* :mod:`~durably.storage.statements`: prebuilt statements, compiled once;
* :mod:`~durably.storage.commit`: how concurrent writes share transactions
  (group commit, loop commit, write turns, checkpoints);
* :mod:`~durably.storage.connections`, :mod:`~durably.storage.urls`,
  :mod:`~durably.storage.driver_errors`, :mod:`~durably.storage.remote`:
  the engine and its settings, URLs, what driver errors mean, the Hrana
  batch sender;
* :mod:`~durably.storage.replica`: reads from an embedded replica (pyturso's sync engine);
* :mod:`~durably.storage.postgresql`: :class:`PostgresDatabase`, the same ways
  in on a PostgreSQL server, without SQLite's machinery;
  :func:`~durably.storage.choice.open_database` picks one per URL.
"""

from .choice import AnyDatabase, open_database
from .database import Database
from .postgresql import PostgresDatabase
from .statements import Batch, Outcome, Statement

__all__ = [
    "AnyDatabase",
    "Batch",
    "Database",
    "Outcome",
    "PostgresDatabase",
    "Statement",
    "open_database",
]
