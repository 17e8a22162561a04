"""The framework integrations name the set-up a request is missing, as a DurablyError."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.testclient import TestClient

from durably import Durably, DurablyError
from durably.contrib.fastapi import get_durably, lifespan
from durably.contrib.flask import FlaskDurably, current_durably

AppDurably = Annotated[Durably, Depends(get_durably)]


def test_fastapi_get_durably_without_the_lifespan_says_how_to_set_it_up() -> None:
    app = FastAPI()

    @app.get("/runs")
    def runs(durably: AppDurably) -> int:
        return len(durably.get_runs())

    with TestClient(app) as client, pytest.raises(DurablyError, match="lifespan"):
        client.get("/runs")


def test_fastapi_get_durably_with_the_lifespan_is_the_apps_durably(tmp_path: Path) -> None:
    durably = Durably(f"sqlite:///{tmp_path / 'app.db'}")
    app = FastAPI(lifespan=lifespan(durably))

    @app.get("/same")
    def same(found: AppDurably) -> bool:
        return found is durably

    with TestClient(app) as client:
        assert client.get("/same").json() is True


def test_flask_current_durably_without_the_extension_says_how_to_set_it_up(
    tmp_path: Path,
) -> None:
    bare = Flask("bare")
    with bare.app_context(), pytest.raises(DurablyError, match="init_app"):
        current_durably()

    durably = Durably(f"sqlite:///{tmp_path / 'app.db'}")
    extension = FlaskDurably(durably)
    app = Flask("app")
    extension.init_app(app)
    with app.app_context():
        assert current_durably() is durably
    durably.close()
