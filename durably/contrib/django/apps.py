"""The app config: ``INSTALLED_APPS = [..., "durably.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

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
        """
        autodiscover_modules(JOBS_MODULE)
