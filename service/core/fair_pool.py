"""A connection pool that serves waiting requests first come, first served.

SQLAlchemy's asyncio pool keeps its free connections in an `asyncio.Queue` and takes one without
waiting when one is there. A connection given back while requests wait is put in the queue and
the first waiter is woken, but a request that arrives before that waiter runs takes the
connection, and the waiter goes back to the end of the line. Under load a few requests lose their
turn again and again: with 64 clients on a pool of 10, the state GET's p99 was 275 to 336 ms against
a p50 of 15 ms (docs/architecture.md, "Connections"). Here a connection given back goes straight
to the request that has waited longest, and a request that finds others waiting joins the line.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full

_T = TypeVar("_T")


class FairQueue(AsyncAdaptedQueue[_T]):
    """The pool's free connections (last given back first out with `use_lifo`), and the
    requests waiting for one, in arrival order."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._free: deque[_T] = deque()
        self._waiting: deque[asyncio.Future[_T]] = deque()

    def empty(self) -> bool:
        return not self._free

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._free)

    def qsize(self) -> int:
        return len(self._free)

    def put_nowait(self, item: _T) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not timed out or cancelled meanwhile
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._free.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # the pool never gives back more than it holds: never blocks

    def get_nowait(self) -> _T:
        if not self._free:
            raise Empty()
        return self._free.pop() if self.use_lifo else self._free.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        if self._free or not block:
            return self.get_nowait()
        return self.await_(self._wait(seconds=timeout))

    async def _wait(self, *, seconds: float | None) -> _T:
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except TimeoutError:
            self._leave(waiter)
            raise Empty() from None
        except BaseException:
            self._leave(waiter)
            raise

    def _leave(self, waiter: asyncio.Future[_T]) -> None:
        """A waiter that gives up: a connection handed to it meanwhile goes to the next one."""
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())
        else:
            waiter.cancel()  # put_nowait skips it


class FairPool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool` with `FairQueue`: otherwise the same pool."""

    _queue_class: Any = FairQueue
