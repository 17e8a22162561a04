"""``manage.py durably_migrate``: create or upgrade durably's tables (not Django migrations)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .....errors import ValidationError
from ...conf import get_durably


class Command(BaseCommand):  # type: ignore[misc]
    help = "Create or upgrade durably's tables in the database of settings.DURABLY."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            durably = get_durably()
        except ValidationError as exc:  # settings.DURABLY: one line, no traceback
            raise CommandError(str(exc)) from None
        durably.migrate()
        self.stdout.write("durably: migrated")
