"""Start and stop a real Turso sync server: ``tursodb --sync-server 127.0.0.1:PORT FILE``.

``tursodb`` is the Turso engine's CLI, from the npm package ``@tursodatabase/cli-linux-x64-gnu``
pinned in tests/hrana/clients (`make test` installs it). Its sync server is what pyturso's
``turso.sync`` replicas pull from (``POST /pull-updates``). It also answers a minimal
``/v2/pipeline`` (``execute`` and ``batch``, no batons), through which the test Hrana server's
``--mirror`` replays the primary's writes (tests/hrana/mirror.py). It locks its file.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import DRIVERS, REMOTE_TOKEN
from tests.hrana.process import JsonObj, Server, start_server, stop_server

TURSODB = (
    Path(__file__).parent
    / "clients"
    / "node_modules"
    / "@tursodatabase"
    / "cli-linux-x64-gnu"
    / "tursodb"
)


@dataclass
class SyncServer:
    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sync_server(directory: Path, name: str) -> SyncServer:
    """``tursodb --sync-server`` on DIRECTORY/NAME.db and a free port; returns once it listens."""
    assert TURSODB.is_file(), (
        f"tursodb is not installed: `make test` runs npm ci in {TURSODB.parents[2]}"
    )
    db, log = directory / f"{name}.db", directory / f"{name}.tursodb.log"
    port = _free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(TURSODB), "--sync-server", f"127.0.0.1:{port}", str(db)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    server = SyncServer(proc, port, db, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tursodb exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"tursodb did not listen on {port}: {log.read_text()[-2000:]}")


@dataclass
class MirroredPrimary:
    """The replica tests' set-up: durably's primary (the Hrana test server) replays every
    committed write on a real ``tursodb --sync-server``, which replicas pull from."""

    primary: Server
    sync: SyncServer
    mirror_may_fail: bool = False
    """Set by a test that stops the sync server: the mirror's failures are then expected."""

    @property
    def durably_url(self) -> str:
        return DRIVERS["remote"].format(port=self.primary.port, token=REMOTE_TOKEN)

    def mirror_errors(self) -> list[JsonObj]:
        return [e for e in self.primary.trace() if "mirror_error" in e]


@contextmanager
def mirrored_primary(directory: Path, *extra: str) -> Iterator[MirroredPrimary]:
    """A sync server and a primary that mirrors to it (``extra``: more of the primary's
    options); on exit, checks that every write reached the sync server."""
    sync = start_sync_server(directory, "sync")
    try:
        primary = start_server(
            directory, "primary", "--mirror", sync.url, *extra, token=REMOTE_TOKEN
        )
        try:
            setup = MirroredPrimary(primary, sync)
            yield setup
        finally:
            stop_server(primary.proc)
        assert setup.mirror_may_fail or setup.mirror_errors() == []
    finally:
        sync.stop()
