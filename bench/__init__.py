"""durably's benchmark: ``make bench`` (or ``python -m bench --help``).

Modules: :mod:`bench.plan` lists what is measured, :mod:`bench.workloads`
(in-process durably), :mod:`bench.processes` and :mod:`bench.worker` (worker
processes), :mod:`bench.floor` (the stdlib ``sqlite3`` floor),
:mod:`bench.peers` (DBOS, huey), :mod:`bench.report` and
:mod:`bench.targets` (the markdown). :mod:`bench.profile` profiles W2.
"""
