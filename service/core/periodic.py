"""A worker's background job: some database work every few seconds, which never stops the worker.

The statistics rollup and ledger seal (every second), the event table's partitions made ahead
(every hour) and the retention purge (every few hours) run this way in each worker; the database
keeps them to one at a time (a row lock, advisory locks). A failure (the database away, or not
migrated yet) is logged once, and the job is tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from service.core.logging import get_logger

log = get_logger("service.core.periodic")


class Periodic:
    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[object]],
        *,
        at_start: bool = False,
    ) -> None:
        """`work` every `interval` seconds (0: never), the first time at once with `at_start`,
        else after one interval."""
        self._name = name
        self._at_start = at_start
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
        wait = 0.0 if self._at_start else self._interval
        while True:
            await asyncio.sleep(wait)
            wait = self._interval
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
