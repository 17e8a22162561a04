"""The app config: ``INSTALLED_APPS = [..., "durably.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.utils.module_loading import autodiscover_modules

from .checks import check_setting
from .conf import setting_error

JOBS_MODULE = "jobs"
"""The module of each installed app imported when the project is ready, for its jobs."""


class DurablyConfig(AppConfig):  # type: ignore[misc]
    name = "durably.contrib.django"
    label = "durably"
    verbose_name = "durably"

    def ready(self) -> None:
        """Import every installed app's ``jobs`` module, so every process knows every job.

        A worker claims only runs of jobs it has registered; importing them
        here, as the admin imports ``admin`` modules, means ``durably_worker``
        and the web processes see the same set without listing it anywhere.

        With a bad ``settings.DURABLY`` there is no ``Durably`` to register
        jobs on: the modules are not imported, and the system check
        ``durably.E001`` reports the setting instead of the first ``jobs``
        module's import failing with a traceback.
        """
        checks.register(check_setting)
        if setting_error() is None:
            autodiscover_modules(JOBS_MODULE)
