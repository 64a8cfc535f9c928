"""Per-client limits, counted in this process's memory: no address is kept, only the keyed hash
the caller passes (the same HMAC the ledger stores), and nothing is shared between workers, so with
N workers behind one port a client gets up to N times the limit (docs/architecture.md,
"Limits"). A fixed window per client: cheap, and enough to stop a flood or a key-guessing run."""

from __future__ import annotations

import math
import time


class RateLimiter:
    MAX_CLIENTS = 100_000  # beyond this the oldest windows are forgotten first

    def __init__(self, limit: int, window_seconds: float = 60.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None while it is under the limit."""
        started, count = self._windows.get(client, (0.0, 0))
        now = time.monotonic()
        if count < self.limit or now - started >= self.window:
            return None
        return max(1, math.ceil(started + self.window - now))

    def hit(self, client: str) -> int | None:
        """Count one request (or failure) of `client`; as `retry_after`, after counting it."""
        now = time.monotonic()
        started, count = self._windows.get(client, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        if len(self._windows) >= self.MAX_CLIENTS and client not in self._windows:
            self._forget_lapsed(now)
        self._windows[client] = (started, count + 1)
        if count + 1 <= self.limit:
            return None
        return max(1, math.ceil(started + self.window - now))

    def _forget_lapsed(self, now: float) -> None:
        self._windows = {
            client: window
            for client, window in self._windows.items()
            if now - window[0] < self.window
        }
        while len(self._windows) >= self.MAX_CLIENTS:  # all current: drop the oldest
            del self._windows[next(iter(self._windows))]
