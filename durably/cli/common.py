"""What every ``durably`` command shares: exit codes, errors, and opening the database.

Operational commands work from the database alone (``--url``, or the
environment), because the person who asks "which runs failed?" is often on a
machine, or in a shell, where the app's code is not importable. ``--app``
uses the app's own ``Durably`` instead, when its jobs matter: a schedule's run
then goes to its job's queue, and a retrigger checks that the job still exists.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..app import Durably
from ..errors import ValidationError
from ..storage.urls import ENV_URL, TURSO_ENV_URL, make_engine_url, url_from_env

EXIT_OK = 0
EXIT_FAILED = 1
"""Something the user named does not exist, or its state forbids the change; or the database
cannot be reached."""
EXIT_USAGE = 2
"""The command line itself is wrong: an unknown option, a bad value, an APP that is not one."""


class UsageError(Exception):
    """A mistake in the command line: one line on stderr and exit code 2, never a traceback."""


class Failure(Exception):
    """What the user asked for cannot be done (exit code 1): one line, never a traceback."""


def database_options(*, app: bool = True) -> argparse.ArgumentParser:
    """The options that say which database a command works on (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        help=f"database URL (default: ${ENV_URL}, then ${TURSO_ENV_URL}; "
        "a remote server's token from $DURABLY_AUTH_TOKEN or $TURSO_AUTH_TOKEN)",
    )
    if app:
        parent.add_argument(
            "--app",
            metavar="MODULE:ATTRIBUTE",
            help="use your app's Durably instance (its database and jobs) instead of --url",
        )
    return parent


def json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parent


@contextmanager
def opened(args: argparse.Namespace, *, create: bool = False) -> Iterator[Durably]:
    """The ``Durably`` a command works on, closed when the command is done.

    A local file that does not exist is refused (unless ``create``): SQLite
    would create an empty one, and a typo in a path would then read as "no
    durably tables" instead of "no such file".
    """
    spec = getattr(args, "app", None)
    if spec and args.url:
        raise UsageError("give --url or --app, not both: the app names its own database")
    if spec:
        durably = load_app(spec)
    else:
        url, token = resolve_url(args.url, os.environ)
        if not create:
            _require_local_file(url)
        durably = Durably(url, auth_token=token)
    try:
        yield durably
    finally:
        durably.close()


def resolve_url(given: str | None, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """``(url, auth_token)``: ``--url`` first, then the environment (as ``Durably.from_env``)."""
    environment = dict(environ)
    if given:
        environment[ENV_URL] = given
    try:
        return url_from_env(environment)
    except ValidationError as exc:
        raise UsageError(f"{exc}; or give --url") from None


def _require_local_file(url: str) -> None:
    try:
        parsed = make_engine_url(url)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or parsed.get_driver_name() == "hrana":
        return
    if not database or database.startswith("file:"):
        return
    path = Path(database).expanduser().absolute()
    if not path.exists():
        raise Failure(
            f"No database file at {str(path)!r}: check --url (`durably migrate` creates one)"
        )


def load_app(spec: str) -> Durably:
    """Import ``module:attribute`` and return the ``Durably`` instance it names.

    Each way this can go wrong gets its own message: a module that is not
    there, one that imports something that is not installed, a missing
    attribute, an attribute that is something else.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"expected MODULE:ATTRIBUTE (e.g. myapp.jobs:durably), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise UsageError(
                f"cannot import {module_name!r}: no such module "
                f"(looked in the current directory and on PYTHONPATH)"
            ) from None
        raise UsageError(
            f"cannot import {module_name!r}: it imports {exc.name!r}, which is not installed"
        ) from None
    if not hasattr(module, attribute):
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}")
    app = getattr(module, attribute)
    if not isinstance(app, Durably):
        raise UsageError(
            f"{spec} is a {type(app).__name__}, not a durably.Durably instance "
            f"(e.g. durably = Durably(...))"
        )
    return app
