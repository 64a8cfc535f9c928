"""A worker's background job: some database work every few seconds, which never stops the worker.

The statistics rollup and ledger seal (every second) and the retention purge (every few hours)
run this way in each worker; the database keeps them to one at a time (a row lock, advisory
locks). A failure (the database away, or not migrated yet) is logged once, and the job is tried
again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from service.core.logging import get_logger

log = get_logger("service.core.periodic")


class Periodic:
    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[object]]) -> None:
        """`work` every `interval` seconds, the first time after one interval (0: never)."""
        self._name = name
        self._interval = interval
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name=f"consent-{self._name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, or not migrated yet: next time
                if not failing:
                    log.warning(f"{self._name}_failed", error=type(exc).__name__)
                failing = True
            else:
                failing = False
