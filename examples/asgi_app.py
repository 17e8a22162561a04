"""An ASGI app (Starlette) that runs durably's asyncio engine in its lifespan.

    pip install 'durably[asgi]'         # starlette + uvicorn
    uvicorn examples.asgi_app:app
    curl -X POST localhost:8000/reports -H 'content-type: application/json' -d '{"pages": 5}'
    curl localhost:8000/reports/<run_id>

The engine's tasks share the server's event loop; database work runs in
durably's threads, so requests are never held up by it. On SIGTERM, uvicorn
ends the lifespan: the engine stops claiming, waits up to
``SHUTDOWN_TIMEOUT`` seconds for in-flight runs, then hands the rest back
so another worker resumes them from their completed steps.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from durably import AsyncStepContext, Durably, Run, ValidationError

SHUTDOWN_TIMEOUT = 20.0

durably = Durably(os.environ.get("DURABLY_DATABASE_URL", "sqlite:///durably-asgi.db"))


async def render_page(number: int) -> str:
    await asyncio.sleep(0.01)  # stands in for an HTTP call or a query
    return f"page {number}"


def summarise(pages: list[str]) -> str:  # plain, blocking code: runs in a thread
    return ", ".join(pages)


@durably.job("build-report")
async def build_report(step: AsyncStepContext, input: dict[str, int]) -> dict[str, Any]:
    pages = []
    for number in range(1, input["pages"] + 1):
        # An async function (here bound with partial) is awaited on the loop.
        pages.append(await step.run(f"page-{number}", partial(render_page, number)))
        step.progress(number, input["pages"], f"rendered page {number}")
    summary = await step.run("summary", lambda: summarise(pages))
    return {"pages": len(pages), "summary": summary}


def describe(run: Run) -> dict[str, Any]:
    progress = run.progress
    return {
        "id": run.id,
        "status": run.status.value,
        "progress": None
        if progress is None
        else {"current": progress.current, "total": progress.total},
        "output": run.output,
        "error": run.error,
    }


async def create_report(request: Request) -> JSONResponse:
    body = await request.json()
    try:
        run = await build_report.trigger_async({"pages": int(body.get("pages", 3))})
    except (ValidationError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(describe(run), status_code=202)


async def show_report(request: Request) -> JSONResponse:
    run = await build_report.get_run_async(request.path_params["run_id"])
    if run is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(describe(run))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await durably.migrate_async()
    await durably.start_async()
    try:
        yield
    finally:
        await durably.stop_async(timeout=SHUTDOWN_TIMEOUT)


app = Starlette(
    routes=[
        Route("/reports", create_report, methods=["POST"]),
        Route("/reports/{run_id}", show_report),
    ],
    lifespan=lifespan,
)
