"""The server's side of the forwarding app, played by the tests: ``Client`` drives one ASGI
connection of a ``ForwardingApp``, the scopes a server would give it, and a server answering a
worker's heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.waiting import WAIT
from towpath.interface.forwarding import ForwardingApp
from towpath.interface.protocol.base import ClientDisconnected
from towpath.layers.base import BaseChannelLayer
from towpath.layers.memory import InMemoryChannelLayer

Message = dict[str, Any]


class Client:
    """The server's side of one ASGI connection: feeds the app's ``receive``, records its
    ``send``; ``send`` raises ``ClientDisconnected`` once the client is gone, as a server does."""

    def __init__(self, app: ForwardingApp, scope: Message) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self._changed = asyncio.Event()
        self.gone = False
        self.task = asyncio.get_running_loop().create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("client gone")
        self.sent.append(message)
        self._changed.set()

    def feed(self, message: Message) -> None:
        if message["type"].endswith("disconnect"):
            self.gone = True
        self.inbox.put_nowait(message)

    async def sent_count(self, count: int) -> list[Message]:
        """Wait until the app has sent ``count`` messages; return them."""
        async with asyncio.timeout(WAIT):
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.sent[:count]

    async def finished(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.task


def http_scope(
    path: str = "/", headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "headers": headers or [(b"host", b"example.com")],
        "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
        "state": {"not": object()},  # this process's lifespan state: must not travel
    }


def ws_scope(path: str = "/ws") -> Message:
    return {
        **http_scope(path),
        "type": "websocket",
        "scheme": "ws",
        "subprotocols": ["chat", "superchat"],
        "extensions": {"websocket.http.response": {}},
    }


async def receive(layer: BaseChannelLayer, channel: str) -> Message:
    async with asyncio.timeout(WAIT):
        return await layer.receive(channel)


@asynccontextmanager
async def answering(
    layer: InMemoryChannelLayer, control: str, unknown: tuple[str, ...] = ()
) -> AsyncIterator[list[Message]]:
    """A server that answers every heartbeat on ``control`` (naming ``unknown`` as no longer
    held) until the block ends; the heartbeats it got."""
    got: list[Message] = []

    async def answer() -> None:
        while True:
            heartbeat = await layer.receive(control)
            got.append(heartbeat)
            ack: Message = {"type": "towpath.heartbeat.ack", "control_channel": control}
            if unknown:
                ack["unknown"] = list(unknown)
            await layer.send(heartbeat["worker"], ack)

    task = asyncio.get_running_loop().create_task(answer())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
