"""A throwaway PostgreSQL server for the tests and the bench: ``initdb`` + ``pg_ctl`` in a
temporary directory.

The server is started once per test session and removed with its directory at
the end; each test gets a database of its own (:meth:`Server.create_database`),
dropped after it. It listens on a Unix socket in its directory only (no TCP
port to collide with another run), with ``fsync`` off: the tests prove
behaviour, not durability of the host's disk. A test may stop and start the
server (:meth:`Server.shut_down`, :meth:`Server.start`, :meth:`Server.restart`),
as a user's server is restarted under its clients; such a test starts a
server of its own, not the session's (tests/crash/test_postgresql_faults.py).

PostgreSQL refuses to run as root, so under root (a container, CI) ``initdb``
and ``postgres`` run as the unprivileged ``nobody`` through ``runuser``, and the
directory is handed to that user.

The bench (bench/postgres.py) starts the same server with PostgreSQL's own
durability settings instead (``start_server(settings=...)``); this module
imports nothing of pytest's, so both can use it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUPERUSER = "durably"
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "32MB",
}
"""Settings for a fast, private test server (no TCP, no fsync, many connections)."""
UNPRIVILEGED_USER = "nobody"


class ServerUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, or Debian's."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    candidates += [Path(path) for path in debian]
    for directory in candidates:
        if all((directory / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


@dataclass
class Server:
    directory: Path
    bin_dir: Path
    _as_user: list[str]
    options: str = ""
    """The ``postgres`` command-line options it was started with (``pg_ctl -o``)."""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> str:
        return str(self.directory)

    def url(self, database: str) -> str:
        """The URL a durably user writes for ``database`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser's connection to ``database``, in autocommit mode."""
        return psycopg.connect(
            host=self.socket_dir, user=SUPERUSER, dbname=database, autocommit=True
        )

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database (a copy of ``template0``); its name."""
        name = f"{prefix}_{next(self._counter)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        """Start the server (again), with its options; returns once it accepts connections."""
        log = str(self.directory / "server.log")
        self._pg_ctl("start", "-w", "-l", log, "-o", self.options)

    def shut_down(self, mode: str = "fast") -> None:
        """Stop the server and keep its data: ``fast`` ends every session first, as a
        server's restart does; ``immediate`` drops everything at once, as a crash does."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``: every session ends, the server is back when it returns."""
        self.shut_down(mode)
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        _run(self._as_user, self.bin_dir / "pg_ctl", args[0], "-D", self.data_dir, *args[1:])

    def stop(self) -> None:
        """Stop the server for good and remove its directory."""
        subprocess.run(
            [
                *self._as_user,
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-D",
                self.data_dir,
                "-m",
                "immediate",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def data_dir(self) -> str:
        return str(self.directory / "data")


def start_server(settings: Mapping[str, str] | None = None, parent: Path | None = None) -> Server:
    """Start a private PostgreSQL server in a new temporary directory (see the module).

    ``settings`` replace or add to :data:`SERVER_SETTINGS`; the directory is made
    in ``parent`` (default: the system's temporary directory).
    """
    bin_dir = find_binaries()
    if bin_dir is None:
        raise ServerUnavailable("no initdb/pg_ctl/postgres on PATH or in /usr/lib/postgresql/*/bin")
    directory = Path(tempfile.mkdtemp(prefix="durably-pg-", dir=parent))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", UNPRIVILEGED_USER, "--"]
    server = Server(directory, bin_dir, as_user)
    try:
        _run(
            as_user,
            bin_dir / "initdb",
            "-D",
            server.data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        chosen = {**SERVER_SETTINGS, **(settings or {})}
        options = " ".join(f"-c {name}={value}" for name, value in chosen.items())
        server.options = options + f" -c unix_socket_directories='{directory}'"
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def _run(as_user: list[str], program: Path, *args: str) -> None:
    done = subprocess.run(
        [*as_user, str(program), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{program.name} failed ({done.returncode}): {done.stderr or done.stdout}"
        )
