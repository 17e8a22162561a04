"""The example shop's settings, plus an app of tasks that exercise the backend's contract."""

from project.settings import *  # noqa: F403  (examples/django_project is on the path)
from project.settings import DURABLY, INSTALLED_APPS, TASKS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.django.testapp"]
# A short lease: a killed worker's task is taken over within a second or two.
DURABLY = {**DURABLY, "POLLING_INTERVAL": 0.05, "HEARTBEAT_INTERVAL": 0.2, "STALE_THRESHOLD": 1.0}
TASKS = {"default": {**TASKS["default"], "QUEUES": [*TASKS["default"]["QUEUES"], "ordered"]}}
