"""The tests' settings with ``DURABLY`` read from ``$BAD_DURABLY`` (JSON), for test_django_checks.py.

The URLconf is this module's empty one: the example shop's views import a
``jobs`` module, which needs the project's ``Durably`` as it is imported, so
with a bad setting Django's URL check would fail on that import before
``durably.E001`` is reported (docs/django.md says so).
"""

import json
import os

from tests.django.settings import *  # noqa: F403

DURABLY = json.loads(os.environ["BAD_DURABLY"])
ROOT_URLCONF = __name__
urlpatterns: list[object] = []
