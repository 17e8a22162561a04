"""The system check ``durably.E001``: ``settings.DURABLY`` must build the project's ``Durably``.

Registered by the app's ``ready()``. ``manage.py check``, ``runserver`` and
every command that runs Django's checks report a bad setting (an unknown
key, a URL that is not one, an option durably refuses) as one error that
names it, instead of a traceback from the first import that needed the
``Durably``.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import SETTING, setting_error

E001 = "durably.E001"


def check_setting(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``durably.E001`` when ``settings.DURABLY`` does not build a ``Durably``, else nothing."""
    error = setting_error()
    if error is None:
        return []
    hint = f"See the settings.{SETTING} table in durably's docs/django.md."
    return [Error(error, hint=hint, id=E001)]
