"""The client side of the back-pressure runs with real processes
(``tests/e2e/test_backpressure_*_e2e.py``): settings for ``tests.support.backpressure_app``,
WebSocket clients, and what Redis and the server say about them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.waiting import WAIT
from towpath.testing.processes import ServeProcess
from towpath.testing.services import RedisServer

#: how long the many-client steps may take on a loaded two-core machine
LONG = 90.0


def write_settings(directory: Path, redis_url: str, capacities: dict[str, int]) -> Path:
    config = {"hosts": [redis_url], "channel_capacity": capacities}
    path = directory / "bp_settings.py"
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
        f"'CONFIG': {config!r}, 'ROUTING': 'tests.support.backpressure_app:routes'}}}}\n"
    )
    return path


async def zcard(redis: RedisServer, key: str) -> int:
    """ZCARD over a raw connection (RESP)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", redis.port)
    try:
        writer.write(f"*2\r\n$5\r\nZCARD\r\n${len(key)}\r\n{key}\r\n".encode())
        line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    assert line.startswith(b":"), line
    return int(line[1:])


class Client:
    """One WebSocket client reading every frame until closed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                self.frames.append(str(frame))
                self.changed.set()
        self.changed.set()

    @property
    def readies(self) -> int:
        return sum(frame.startswith("ready ") for frame in self.frames)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def wait_until(self, test: Any) -> None:
        while not test(self):
            if self.task.done():
                raise AssertionError(f"closed {self.close_code}: {self.frames[-3:]}")
            self.changed.clear()
            await self.changed.wait()


@asynccontextmanager
async def clients(url: str, count: int, batch: int = 50) -> AsyncIterator[list[Client]]:
    """``count`` clients of ``/bp/``, each ready (its consumer joined the group), connected
    ``batch`` at a time; closed at the end."""
    made: list[Client] = []
    try:
        async with asyncio.timeout(LONG):
            for start in range(0, count, batch):
                wss = await asyncio.gather(
                    *(
                        connect(f"{url}/bp/", open_timeout=WAIT, max_queue=None)
                        for _ in range(min(batch, count - start))
                    )
                )
                group = [Client(ws) for ws in wss]
                made += group
                await asyncio.gather(*(c.wait_until(lambda c: c.readies) for c in group))
        yield made
    finally:
        await asyncio.gather(*(c.ws.close() for c in made), return_exceptions=True)
        for client in made:
            client.task.cancel()


async def forwarding_stats(served: ServeProcess) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        stats: dict[str, Any] = (await served.logged_stats())["forwarding"]
    return stats
