"""An app whose stop never ends and whose one route never answers: what shared/http_server.py
must still exit from when told to stop (tests/platform/test_shutdown.py)."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # As a stop that waits on something that never comes; shielded, as a wait that
        # swallows its cancellation would be.
        await asyncio.shield(asyncio.Event().wait())

    app = FastAPI(lifespan=lifespan)

    @app.get("/hang")
    async def hang():
        await asyncio.Event().wait()

    @app.get("/up")
    async def up():
        return {"up": True}

    return app


def create_app_that_stops() -> FastAPI:
    return FastAPI()
