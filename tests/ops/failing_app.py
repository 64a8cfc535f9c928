"""An app factory whose app fails to start, for tests/ops/test_serve_start.py: `serve` runs it in
its workers as it runs the service's, and it logs as the service's does (`create_app` sets up
the logging of a worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.core.logging import configure_logging


def create_app() -> FastAPI:
    configure_logging("INFO")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("this app refuses to start")
        yield

    return FastAPI(lifespan=lifespan)
