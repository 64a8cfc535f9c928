"""A TCP forwarder the tests can cut, to make the database unreachable for real."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path


class CuttableProxy:
    """Listens on 127.0.0.1 and forwards each connection to PostgreSQL (TCP or Unix socket).

    `cut()` closes the listener and every open connection, as a network partition would;
    `restore()` listens again on the same port. `freeze()` holds every byte in both directions
    with the connections left open, as a hung server would; `thaw()` lets them through again.
    """

    def __init__(self, *, host: str | None, port: int, unix_path: Path | None) -> None:
        self._target_host = host
        self._target_port = port
        self._unix_path = unix_path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unix_path is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self._unix_path))
        else:
            up_reader, up_writer = await asyncio.open_connection(
                self._target_host, self._target_port
            )
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()
