"""Start, stop, kill and restart the test Hrana server (server.py) as a separate process.

The server must not run in the test interpreter: the stock libsql client keeps the GIL while it
waits on the network, so a server thread next to it would deadlock.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
JsonObj = dict[str, Any]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    trace_path: Path
    token: str | None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The server's HTTP address."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def libsql_url(self) -> str:
        """The URL a durably user writes for this server."""
        return f"sqlite+libsql://127.0.0.1:{self.port}?secure=false"

    def trace(self) -> list[JsonObj]:
        """The server's --trace output: one JSON object per request."""
        lines = self.trace_path.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.startswith(b"{")]

    def stop(self) -> None:
        stop_server(self.proc)

    def kill(self) -> None:
        """``kill -9``: open streams and their transactions vanish with the process."""
        self.proc.send_signal(signal.SIGKILL)
        _reap(self.proc)

    def restart(self) -> Server:
        """A new server process on the same file and the same port."""
        if self.proc.poll() is None:
            self.stop()
        name = self.db.stem
        return start_server(
            self.db.parent, name, "--port", str(self.port), *self.extra, token=self.token
        )


def start_server(
    directory: Path, name: str, *extra: str, token: str | None = None, trace: bool = True
) -> Server:
    """``python -m tests.hrana.server --db DIRECTORY/NAME.db``, on a free port unless ``extra``
    names one; returns once it listens."""
    db = directory / f"{name}.db"
    trace_path = directory / f"{name}.trace"
    cmd = [sys.executable, "-m", "tests.hrana.server", "--db", str(db)]
    if "--port" not in extra:
        cmd += ["--port", "0"]
    if trace:
        cmd.append("--trace")
    if token is not None:
        cmd += ["--auth-token", token]
    with trace_path.open("ab") as trace_file:
        proc = subprocess.Popen([*cmd, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=trace_file)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=15)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("listening "):
        stop_server(proc)
        raise RuntimeError(f"server did not start: {line!r} {trace_path.read_text()[-2000:]}")
    kept = tuple(
        a for i, a in enumerate(extra) if a != "--port" and (i == 0 or extra[i - 1] != "--port")
    )
    return Server(proc, int(line.rsplit(":", 1)[1]), db, trace_path, token, kept)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for the process and close our end of its stdout pipe (else a ResourceWarning)."""
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
