"""A FastAPI app whose lifespan runs durably's asyncio engine on the server's event loop.

    pip install fastapi uvicorn
    uvicorn examples.fastapi_app:app
    curl -X POST 'localhost:8000/thumbnails?image=cat.png'
    curl localhost:8000/thumbnails/<run_id>

On SIGTERM uvicorn ends the lifespan, which stops the engine: no more
claims, in-flight runs get ``stop_timeout`` seconds, the rest are handed
back for another worker to resume.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException

from durably import AsyncStepContext, Durably
from durably.contrib.fastapi import get_durably, lifespan

durably = Durably(
    os.environ.get("DURABLY_DATABASE_URL", "sqlite:///durably-fastapi.db"), polling_interval=0.2
)


async def resize(image: str, width: int) -> str:  # stands in for real image work
    await asyncio.sleep(0.01)
    return f"{image}@{width}w"


@durably.job("thumbnails")
async def thumbnails(step: AsyncStepContext, input: dict[str, str]) -> list[str]:
    return [
        await step.run(f"w{width}", lambda w=width: resize(input["image"], w))
        for width in (64, 256)
    ]


app = FastAPI(lifespan=lifespan(durably, stop_timeout=20))
DurablyDep = Annotated[Durably, Depends(get_durably)]


@app.post("/thumbnails", status_code=202)
async def create(image: str, jobs: DurablyDep) -> dict[str, str]:
    job = jobs.get_job("thumbnails")
    assert job is not None
    run = await job.trigger_async({"image": image})
    return {"id": run.id}


@app.get("/thumbnails/{run_id}")
async def show(run_id: str, jobs: DurablyDep) -> dict[str, Any]:
    run = await jobs.get_run_async(run_id)
    if run is None:
        raise HTTPException(status_code=404)
    return {"status": run.status.value, "output": run.output}
