"""A durably worker process, driven by the bench through stdin and stdout (W4, W5).

``python -m bench.worker '<AppConfig as JSON>'``. The process builds the app
and prints ``ready``; the bench times nothing before that, so interpreter
start-up and imports are never measured. It starts its thread worker on a
``go`` line and, on ``stop`` (or end of input), stops, closes and prints one
JSON line: runs it completed, and its resident memory sampled as it went.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from pathlib import Path
from typing import Any

from .apps import AppConfig, build

SAMPLE_EVERY = 0.1
"""Seconds between memory samples."""


def memory_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from /proc or getrusage."""
    status = Path("/proc/self/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak, peak


class Sampler:
    """Records (runs completed so far, RSS KiB) every ``SAMPLE_EVERY`` seconds."""

    def __init__(self) -> None:
        self.completed = 0
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def on_complete(self, _event: object) -> None:
        with self._lock:
            self.completed += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.samples.append((self.completed, memory_kb()[0]))

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.samples.append((self.completed, memory_kb()[0]))


def main(argv: list[str]) -> int:
    config = AppConfig(**json.loads(argv[1]))
    durably = build(config)
    durably.migrate()  # at head already: a cheap check that keeps it out of the timed part
    sampler = Sampler()
    durably.on("run:complete", sampler.on_complete)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            sampler.start()
            durably.start()
        elif command == "stop":
            break
    durably.stop()
    durably.close()
    sampler.stop()
    report: dict[str, Any] = {
        "completed": sampler.completed,
        "samples": sampler.samples,
        "peak_kb": memory_kb()[1],
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
