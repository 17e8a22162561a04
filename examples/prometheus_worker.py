"""A worker process that Prometheus scrapes: durably's metrics on their own port.

A worker started with ``durably worker`` or ``manage.py durably_worker``
serves no HTTP; this one shows the set-up for such a process:
``DurablyMetrics`` counts what this process runs, and
``prometheus_client.start_http_server`` serves them at
``http://127.0.0.1:$METRICS_PORT/metrics`` (9464 by default). It triggers
a few runs itself, so that there is something to count, and runs until
SIGTERM or Ctrl-C.

    pip install 'durably[prometheus]'
    python examples/prometheus_worker.py
    curl -s localhost:9464/metrics | grep durably_runs
"""

from __future__ import annotations

import os
import signal
import time

from prometheus_client import start_http_server

from durably import Durably, StepContext
from durably.contrib.prometheus import DurablyMetrics

durably = Durably(
    os.environ.get("DURABLY_DATABASE_URL", "sqlite:///metrics-demo.db"), polling_interval=0.2
)


@durably.job("resize")
def resize(step: StepContext, image: dict[str, int]) -> dict[str, int]:
    width = step.run("measure", lambda: image["width"])
    return {"width": step.run("halve", lambda: width // 2)}


def main() -> None:
    durably.migrate()
    metrics = DurablyMetrics(durably)
    server, thread = start_http_server(
        int(os.environ.get("METRICS_PORT", "9464")), addr="127.0.0.1", registry=metrics.registry
    )
    # The handler only records the signal: Python runs it in the main thread,
    # which may be inside a lock's wait (an Event's set() could deadlock there).
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    durably.start()
    try:
        resize.batch_trigger([{"width": width} for width in (640, 1280, 1920)])
        print("serving metrics on", server.server_address, flush=True)
        while not stopping:
            time.sleep(0.5)  # short naps: a wait without a timeout can miss the signal
    except KeyboardInterrupt:
        pass
    finally:
        durably.stop(timeout=10)
        durably.close()
        server.shutdown()
        thread.join(5)


if __name__ == "__main__":
    main()
