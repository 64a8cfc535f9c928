"""The real service as a subprocess (`python -m service serve`), for the tests that need a
process of its own: the browser tests, and several replicas on one database
(tests/ops/test_replicas.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_KEY, TEST_RECEIPT_KEY

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(db_url: str, **settings: str) -> dict[str, str]:
    """As bench/run.py's service_env: nothing CONSENT_ from the caller, production settings,
    plus `settings` (`cors_origins="…"` is CONSENT_CORS_ORIGINS)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")}
    env.update(
        CONSENT_ENV="production",
        CONSENT_DATABASE_URL=db_url,
        CONSENT_IP_HASH_SALT=TEST_KEY,
        CONSENT_RECEIPT_KEY=TEST_RECEIPT_KEY,
        CONSENT_LOG_LEVEL="INFO",
    )
    env.update({f"CONSENT_{name.upper()}": value for name, value in settings.items()})
    return env


def read_log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


async def wait_ready(url: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                last = f"the service exited with status {process.returncode}"
                break
            try:
                answer = await http.get("/readyz")
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 200:
                    return
                last = f"/readyz answered {answer.status_code}: {answer.text[:500]}"
            await asyncio.sleep(0.1)
    log = read_log(log_path)
    pytest.fail(
        f"the service at {url} was not ready in {READY_TIMEOUT_S:.0f} s ({last}); log:\n{log}"
    )


@asynccontextmanager
async def serving(env: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """`python -m service serve --workers 1` on a free port with `env`; its base URL once GET
    /readyz is 200; stopped (SIGTERM, then SIGKILL after 10 s) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    try:
        await wait_ready(url, process, log_path)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
