"""``manage.py durably_migrate``: create or upgrade durably's tables (not Django migrations)."""

from __future__ import annotations

from typing import Any

from ...conf import get_durably
from ..base import DurablyCommand


class Command(DurablyCommand):
    help = "Create or upgrade durably's tables in the database of settings.DURABLY."

    def handle(self, *args: Any, **options: Any) -> None:
        durably = get_durably()  # settings.DURABLY is checked (DurablyCommand)
        durably.migrate()
        self.stdout.write("durably: migrated")
