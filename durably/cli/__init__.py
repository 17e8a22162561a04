"""``durably`` command line: run workers, and answer operational questions from the database.

    durably migrate --url sqlite:///app.db
    durably worker myapp.jobs:durably
    durably runs list --status failed
    durably runs show ID
    durably runs retry --all-failed
    durably stats
    durably dashboard myapp.jobs:durably

Every command but ``worker`` works from the database alone: ``--url``, or
``DURABLY_DATABASE_URL`` (then ``TURSO_DATABASE_URL``) in the environment, so
it runs where the app's code is not installed. Reading commands take
``--json``. Exit codes: 0 done, 1 not found or refused (or the database
cannot be reached), 2 a mistake in the command line. A user's mistake is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import DurablyError, ValidationError
from . import dashboard, health, runs, schedules, worker
from .common import EXIT_FAILED, EXIT_USAGE, Failure, UsageError, database_options, json_option

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durably",
        description="Durable background jobs: run workers, inspect and change runs.",
        epilog="Every command has --help. Docs: docs/operations.md",
    )
    parser.add_argument("--version", action="version", version=f"durably {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    database, json_flag = database_options(), json_option()
    worker.add_commands(commands, database)
    runs.add_commands(commands, database, json_flag)
    health.add_commands(commands, database, json_flag)
    schedules.add_commands(commands, database, json_flag)
    dashboard.add_commands(commands, database)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage mistake exits 2 here, as argparse does
    try:
        return int(args.handler(args))
    except (UsageError, ValidationError) as exc:
        return _fail(exc, EXIT_USAGE)
    except (Failure, DurablyError) as exc:  # not found, refused, the database unreachable
        return _fail(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


def _fail(exc: BaseException, code: int) -> int:
    # One line, whatever the message: a driver's error (psycopg's, say) adds its hint
    # on lines of its own.
    print(f"durably: {' '.join(str(exc).split())}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
