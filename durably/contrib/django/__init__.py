"""Django: an app, settings, jobs from each app's ``jobs.py``, commands and a ``django.tasks`` backend.

    INSTALLED_APPS = [..., "durably.contrib.django"]
    DURABLY = {"URL": "sqlite:///var/app/durably.db"}     # optional
    TASKS = {"default": {"BACKEND": "durably.contrib.django.tasks.DurablyBackend"}}

The project has one :class:`~durably.Durably`, built from ``settings.DURABLY``
the first time :func:`get_durably` is called (:mod:`.conf`). When the app is
ready it imports each installed app's ``jobs`` module, where jobs are
registered on it::

    # shop/jobs.py
    from durably.contrib.django import get_durably

    durably = get_durably()

    @durably.job("send-receipt")
    def send_receipt(step, input): ...

``manage.py durably_worker`` runs a worker until SIGTERM;
``manage.py durably_migrate`` creates durably's tables. A bad
``settings.DURABLY`` is the system check ``durably.E001`` (:mod:`.checks`). Django's own
``migrate`` does not: durably's schema is versioned by durably's Alembic
history, not by Django migrations. :mod:`.tasks` runs Django's tasks
(``django.tasks``, or the ``django-tasks`` backport before Django 6) as
durably runs.
"""

from __future__ import annotations

from .conf import build_durably, get_durably

__all__ = ["build_durably", "get_durably"]
