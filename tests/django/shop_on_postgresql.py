"""The example shop with its default database on PostgreSQL: the server the tests started.

``SHOP_POSTGRES_URL`` names the database (``postgresql+psycopg://USER@/NAME?host=SOCKETS``);
``DURABLY`` has no ``URL``, so durably keeps its tables in that database too.
"""

import os

from project.settings import *  # noqa: F403  (examples/django_project is on the path)
from sqlalchemy.engine import make_url

_url = make_url(os.environ["SHOP_POSTGRES_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username or "",
        "HOST": _url.host or str(_url.query.get("host", "")),
        "PORT": str(_url.port or ""),
    }
}
