"""A WebSocket client that reads only when asked, for the slow-client tests
(``tests/interface/test_ws_output_limit.py``, ``tests/e2e/test_backpressure_server_e2e.py``).

It is a plain non-blocking socket with a small receive buffer (``SO_RCVBUF``, set before it
connects so the window it offers stays small) and wsproto's client: between two calls of
:meth:`RawWebSocket.read` nothing is read, so a test that stops calling it is a client that
stopped reading, and the server feels it at once (``websockets`` or asyncio's streams would
keep reading into their own buffers).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage

__all__ = ["RawWebSocket"]


class RawWebSocket:
    """One client: ``texts`` received in order, ``close`` (the server's close frame) or
    ``reset`` (the connection was cut) once it ended."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.texts: list[str] = []
        self.accepted = False
        self.close: CloseConnection | None = None
        self.reset = False
        self.eof = False
        self._parts: list[str] = []

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/", *, receive_buffer: int = 4096
    ) -> RawWebSocket:
        """Connect and send the handshake (its answer is read by :meth:`read`)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        client = cls(sock)
        await loop.sock_sendall(sock, client.ws.send(Request(host=f"{host}:{port}", target=path)))
        return client

    @property
    def ended(self) -> bool:
        return self.close is not None or self.reset or self.eof

    async def read(self, until: Callable[[RawWebSocket], bool]) -> None:
        """Read (and answer a close frame) until ``until(self)`` holds or the connection
        ended; the caller bounds the wait."""
        loop = asyncio.get_running_loop()
        while not until(self) and not self.ended:
            try:
                data = await loop.sock_recv(self.sock, 65536)
            except (ConnectionResetError, BrokenPipeError):
                self.reset = True
                return
            if not data:
                self.eof = True
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                await self._event(event)

    async def _event(self, event: Event) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted = True
        elif isinstance(event, TextMessage):
            self._parts.append(event.data)
            if event.message_finished:
                self.texts.append("".join(self._parts))
                self._parts.clear()
        elif isinstance(event, CloseConnection):
            self.close = event
            try:
                answer = self.ws.send(event.response())
                await asyncio.get_running_loop().sock_sendall(self.sock, answer)
            except (ConnectionResetError, BrokenPipeError):
                self.reset = True

    def shut(self) -> None:
        self.sock.close()
