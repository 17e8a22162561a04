"""A WSGI app (Flask) that runs durably's thread engine once per process.

    pip install 'durably[wsgi]'         # flask
    flask --app 'examples.wsgi_app:create_app()' run
    flask --app 'examples.wsgi_app:create_app()' durably worker   # or a worker process
    curl -X POST localhost:5000/signups -H 'content-type: application/json' -d '{"email": "a@b.c"}'
    curl localhost:5000/signups/<run_id>

With gunicorn, start one engine in every worker process (after the fork:
threads do not survive one), which the app factory does:

    gunicorn 'examples.wsgi_app:create_app()'

On SIGTERM gunicorn's worker exits normally, so the extension's ``atexit``
hook stops the engine: no more claims, in-flight runs get ``SHUTDOWN_TIMEOUT`` seconds,
the rest are handed back for another worker to resume.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request

from durably import Durably, StepContext, ValidationError
from durably.contrib.flask import FlaskDurably, current_durably

SHUTDOWN_TIMEOUT = 20.0

durably = Durably(os.environ.get("DURABLY_DATABASE_URL", "sqlite:///durably-wsgi.db"))
extension = FlaskDurably(durably, start_worker=True, stop_timeout=SHUTDOWN_TIMEOUT)


def create_account(email: str) -> dict[str, str]:  # stand-ins for your own code
    return {"email": email, "account": f"acct-{abs(hash(email)) % 10_000}"}


def send_email(email: str, subject: str) -> str:
    return f"sent {subject!r} to {email}"


@durably.job("welcome")
def welcome(step: StepContext, input: dict[str, str]) -> dict[str, Any]:
    account = step.run("create-account", lambda: create_account(input["email"]))
    step.progress(1, 2)
    receipt = step.run("send-email", lambda: send_email(input["email"], "Welcome!"))
    step.progress(2, 2)
    return {"account": account["account"], "receipt": receipt}


def create_app() -> Flask:
    """The app, with this process's worker engine started (once: see ``FlaskDurably``)."""
    app = Flask(__name__)

    @app.post("/signups")
    def signup() -> Any:
        try:
            run = welcome.trigger({"email": str((request.get_json() or {})["email"])})
        except (KeyError, ValidationError) as exc:
            return jsonify(error=f"bad request: {exc}"), 400
        return jsonify(id=run.id, status=run.status.value), 202

    @app.get("/signups/<run_id>")
    def signup_status(run_id: str) -> Any:
        run = current_durably().get_run(run_id)
        if run is None or run.job_name != welcome.name:
            return jsonify(error="not found"), 404
        return jsonify(id=run.id, status=run.status.value, output=run.output, error=run.error)

    extension.init_app(app)  # starts this process's engine, once; adds `flask durably …`
    return app
