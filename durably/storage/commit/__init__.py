"""How a write reaches the database: the design of durably's commit pipeline, on one page.

SQLite has one writer at a time, and durably's writes are small: a claim, a
step's result, a completion, a trigger, each a batch of one to four
prebuilt statements. What costs is not the statements but what surrounds
them: taking the lock, a commit, waking threads, and (for a remote server)
a round trip. The pipeline's job is to make concurrent writes share those
costs without changing what any caller can observe: its statements are
committed, in order and atomically, before its write returns, and it gets
the outcomes of its own statements only. Fencing lives inside each
statement (``WHERE`` the lease still holds), so a write that is refused
does not touch the others it travelled with.

The life of a write batch::

    operation yields Write(batch)            (durably.core.operation)
      ├─ sync driver ──────────────► Database.write_batch ─┐
      └─ async driver ─► LoopCommit ─► Database.write_batches (one thread hop)
                                                           ▼
                                                      GroupCommit
                                      (leader passes the gate: the process's
                                       write lock, then its WriteTurn at the file)
                                                           ▼
                                     one transaction on the shared writer connection
                                                           ▼
                                     Checkpointer.nudge (sqlite3 only)

:mod:`~durably.storage.commit.group` — **group commit**, for threads. A
thread that finds no commit under way leads: it passes the gate, then
commits its batch with every batch queued meanwhile, as one transaction,
hands each waiting thread its outcomes, and passes the lead to the oldest
batch queued since. The group is formed *after* the gate, so batches sent
while this process waits for its turn at the file travel along. If the
shared transaction fails, each batch is committed alone for its own error,
unless the error says that would be wrong (the lock timeout passed; a
remote server's answer was lost, so the batch may have been committed).

:mod:`~durably.storage.commit.loop` — **loop commit**, the event loop's
half. The batches a loop's tasks write in one turn of the loop leave
together at its end, in one call of ``write_batches`` in a database thread;
those written while a trip is under way wait for it and leave with the
next. Two wake-ups per trip however many tasks wrote.

:mod:`~durably.storage.commit.turns` — **write turns**, between processes.
SQLite keeps no queue for its lock: a writer that finds it taken sleeps and
tries again, and often sleeps while the lock is free. durably's processes on
one local file first take turns on ``<database>-durably.lock`` with
``flock``, which wakes the next waiter the moment the holder lets go. A turn
is a courtesy, not a lock that matters for correctness: SQLite's lock still
keeps writes apart, a turn that does not come in time is done without, and
where no lock file can be had (Windows, a read-only directory, a remote
server) writes go on without turns.

:mod:`~durably.storage.commit.checkpointer` — **checkpoints** off the
writers' path. In WAL mode a commit only appends to the log; SQLite copies
the log into the file (and syncs both) inside the commit that crosses the
``wal_autocheckpoint`` mark, so one trigger in many paid for everyone's
syncs. With ``sqlite3`` at ``synchronous`` OFF or NORMAL, a thread of
durably's own runs ``PRAGMA wal_checkpoint(PASSIVE)`` soon after writes
instead, and the commit at the mark finds little left to do.

The retry policy (locked database, dropped remote transaction, read-only
file) is not here but in :class:`durably.storage.database.Database`, which
every path above ends in.
"""
