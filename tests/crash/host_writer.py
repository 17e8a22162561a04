"""The host application writing to durably's database file: a plain stdlib ``sqlite3`` loop.

    python tests/crash/host_writer.py DB_PATH

An application that keeps its own data in the same SQLite file as durably
(issue 29, item 1). It creates a table of its own, ``host_data``, prints
``writing <journal mode>`` once that is committed, then loops until killed::

    BEGIN IMMEDIATE; INSERT INTO host_data ...; sleep 0.3 s; COMMIT; sleep 0.05 s

so it holds the file's write lock about 85% of the time, in 0.3 s spells.
Every row records how long its ``BEGIN IMMEDIATE`` waited for the lock (how
much durably held it up), so a test can tell the writer kept going.

It waits up to 60 s for the lock (``sqlite3``'s busy handler): it must not
give up and exit while durably holds the lock, or the contention a test
relies on would silently stop. It never changes the journal mode: the file
stays in the WAL mode durably set.
"""

from __future__ import annotations

import sqlite3
import sys
import time

HOLD = 0.3
"""Seconds each transaction holds the write lock."""
GAP = 0.05
"""Seconds between two transactions, the lock free."""
BUSY_TIMEOUT = 60.0


def main(path: str) -> None:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS host_data ("
        " id INTEGER PRIMARY KEY, began REAL NOT NULL, waited REAL NOT NULL)"
    )
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    print(f"writing {mode}", flush=True)
    while True:
        asked = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        waited = time.monotonic() - asked
        conn.execute("INSERT INTO host_data (began, waited) VALUES (?, ?)", (time.time(), waited))
        time.sleep(HOLD)
        conn.execute("COMMIT")
        time.sleep(GAP)


if __name__ == "__main__":
    main(sys.argv[1])
