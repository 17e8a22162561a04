"""A small shop whose orders make receipts in the background, with durably.

    python manage.py durably_migrate
    python manage.py durably_worker          # in one terminal
    python manage.py runserver               # in another
    curl -X POST 'localhost:8000/orders?total=12.50'
    curl localhost:8000/tasks/<id>

Django 6 ships ``django.tasks``; on Django 5.2 the ``django-tasks`` backport
provides it (``pip install 'durably[django]'`` picks the right one).
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SHOP_DATA_DIR", BASE_DIR))

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
ROOT_URLCONF = "project.urls"

INSTALLED_APPS = ["durably.contrib.django", "shop"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the backport's checks and signal logging

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}

# durably keeps its runs in durably.sqlite3 beside db.sqlite3 unless DURABLY["URL"] says
# (with a PostgreSQL default database: in that database).
DURABLY = {"POLLING_INTERVAL": 0.2}

TASKS = {
    "default": {
        "BACKEND": "durably.contrib.django.tasks.DurablyBackend",
        "QUEUES": ["default", "receipts"],
    }
}
