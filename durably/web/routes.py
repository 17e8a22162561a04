"""Every path the HTTP API answers, relative to where it is mounted: the one list.

The first block is Durably-TS 0.15's ``createDurablyHandler`` (what
``@coji/durably-react`` calls); the second goes beyond it. The handler's
routing table, the dashboard's script and the docs all name these.
"""

from __future__ import annotations

# Durably-TS compatible
TRIGGER = "/trigger"
RUNS = "/runs"
RUN = "/run"
STEPS = "/steps"
SUBSCRIBE = "/subscribe"
RUNS_SUBSCRIBE = "/runs/subscribe"
RETRIGGER = "/retrigger"
CANCEL = "/cancel"

# beyond Durably-TS
RETRY = "/retry"
ATTEMPTS = "/attempts"
LOGS = "/logs"
WORKERS = "/workers"
STATS = "/stats"
SCHEDULES = "/schedules"
SCHEDULE_PAUSE = "/schedules/pause"
SCHEDULE_RESUME = "/schedules/resume"
METRICS = "/metrics"
# the durable-wait routes of Durably-TS's main branch (ADR-0012)
WAITS = "/waits"
WAIT = "/wait"
SIGNAL = "/signal"

# the dashboard
DASHBOARD = "/"
STATIC_PREFIX = "/static/"
