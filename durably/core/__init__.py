"""What durably does to runs, as operations and their SQL: no threads, no loops, no I/O.

Each module answers one question, with the statements it needs, built once:

* :mod:`~durably.core.claim`: how is a run claimed?
* :mod:`~durably.core.leases`: what does a worker hold, and how is it fenced?
* :mod:`~durably.core.lease_service`: the lease holder's operations
  (claim, heartbeat, steps, progress, logs, completion, failure, release);
* :mod:`~durably.core.enqueue`: how is a run created (triggers, keys)?
* :mod:`~durably.core.runs`: reading runs, and changing them from outside
  a lease (cancel, retry, delete, purge);
* :mod:`~durably.core.maintenance`: the worker registry, the reaper, retention.

Every write is an operation (:mod:`~durably.core.operation`): a generator
that yields its requests, run by the sync or the async driver.
"""
