"""The base of durably's ``manage.py`` commands: a bad ``settings.DURABLY`` is one line.

Django runs its system checks before a command's ``handle``; ``durably.E001``
(:mod:`durably.contrib.django.checks`) would report a bad setting there as a block of text. A
durably command has nothing to do without the project's ``Durably``, so it
checks the setting first and stops with one ``CommandError`` line (exit
status 1), as it does for a bad option.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ..conf import setting_error


class DurablyCommand(BaseCommand):  # type: ignore[misc]
    """A command that needs the project's ``Durably``: its setting is checked before anything."""

    def execute(self, *args: Any, **options: Any) -> Any:
        error = setting_error()
        if error is not None:
            raise CommandError(error)
        return super().execute(*args, **options)
