"""The example shop's settings, plus an app of tasks that exercise the backend's contract."""

from project.settings import *  # noqa: F403  (examples/django_project is on the path)
from project.settings import DURABLY, INSTALLED_APPS, TASKS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.django.testapp"]
DURABLY = {**DURABLY, "POLLING_INTERVAL": 0.05}
TASKS = {"default": {**TASKS["default"], "QUEUES": [*TASKS["default"]["QUEUES"], "ordered"]}}
