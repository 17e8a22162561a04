"""Integrations with web frameworks: each module imports only what its framework needs.

- :mod:`durably.contrib.fastapi`: a lifespan and a dependency (FastAPI, Starlette).
- :mod:`durably.contrib.flask`: an extension and ``flask durably`` commands.
- :mod:`durably.contrib.django`: an app, settings, ``manage.py durably_worker`` and a
  ``django.tasks`` backend.
"""
