"""The parts of the ``Durably`` facade, one concern each (see :mod:`durably.app`).

* :mod:`~durably.facade.triggering`: creating runs (what ``Job.trigger`` calls);
* :mod:`~durably.facade.reading`: reading runs, steps, logs, workers; waiting for runs;
* :mod:`~durably.facade.changing`: cancel, retry, retrigger, delete, purge.
* :mod:`~durably.facade.scheduling`: declaring schedules; reading, pausing, resuming
  and triggering them.
"""
