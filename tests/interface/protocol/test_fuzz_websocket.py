"""Hostile WebSocket frames after a valid handshake: random bytes and well-formed-looking frames
with random bits, lengths and masks. The connection either ends with a protocol close or keeps
going; nothing raises, and a fresh connection still works. In memory (many examples), then
against a real server over a raw socket."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, TextMessage

from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import ClientDisconnected, ServerContext
from towpath.interface.protocol.websocket import WebSocketConnection
from towpath.testing.memory_io import MemoryIO
from towpath.testing.server import running_server

KEY = base64.b64encode(os.urandom(16))
HEADERS = [
    (b"host", b"x"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-extensions", b"permessage-deflate"),
]
CONFIG = ServerConfig(max_websocket_message_bytes=4096, ws_ping_interval_seconds=None)


async def echo(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    try:
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({**message, "type": "websocket.send"})
    except ClientDisconnected:
        return


def _mask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    """A frame with random header bits; its declared length may lie about the payload."""
    first = draw(st.integers(0, 255))
    masked = draw(st.booleans()) or draw(st.booleans())  # mostly masked, as clients must
    payload = draw(st.binary(max_size=300))
    declared = draw(st.sampled_from([len(payload), len(payload), draw(st.integers(0, 70000))]))
    if declared < 126:
        head = bytes([first, declared | (0x80 if masked else 0)])
    elif declared < 65536:
        head = bytes([first, 126 | (0x80 if masked else 0)]) + struct.pack("!H", declared)
    else:
        head = bytes([first, 127 | (0x80 if masked else 0)]) + struct.pack("!Q", declared)
    key = draw(st.binary(min_size=4, max_size=4))
    return head + (key + _mask(payload, key) if masked else payload)


hostile = st.lists(st.one_of(frame(), st.binary(max_size=64)), min_size=1, max_size=8)


def _server_events(data: bytes) -> list[Any]:
    """Parse what the server wrote after the 101 head (frames are unmasked, server to client)."""
    _, _, frames = data.partition(b"\r\n\r\n")
    client = WSProtoConnection(ConnectionType.CLIENT)
    client.receive_data(frames)
    return list(client.events())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=hostile, deflate=st.booleans())
def test_hostile_frames_in_memory(chunks: list[bytes], deflate: bool) -> None:
    async def scenario() -> None:
        io = MemoryIO(echo)
        WebSocketConnection.from_http11_upgrade(
            io,
            ServerContext(CONFIG),
            target=b"/",
            headers=HEADERS if deflate else HEADERS[:5],
            http_version="1.1",
            trailing=b"",
        )
        await io.run_until(lambda: b"\r\n\r\n" in io.written)
        for chunk in chunks:
            io.feed(chunk)  # must not raise
            await asyncio.sleep(0)
        if io.closed:
            written = bytes(io.written)
            if b"permessage-deflate" not in written.partition(b"\r\n\r\n")[0]:
                events = _server_events(written)
                closes = [e for e in events if isinstance(e, CloseConnection)]
                # a protocol close (1002/1007/1009), or the echo of a close the client sent
                # itself, whatever its code (none at all reads as 1005)
                assert closes, written
        else:
            io.lose()
        await io.wait_apps()
        for runner in io.runners.values():
            assert runner.task is not None and runner.task.exception() is None

    asyncio.run(scenario())


async def _raw_session(host: str, port: int, chunks: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    head = b"GET /fuzz HTTP/1.1\r\n" + b"".join(b"%s: %s\r\n" % pair for pair in HEADERS) + b"\r\n"
    writer.write(head)
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101 ")
    try:
        for chunk in chunks:
            writer.write(chunk)
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass  # the server already failed the connection
    try:
        rest = await asyncio.wait_for(reader.read(), 5)  # the server ends it: no hang
    except ConnectionError:
        rest = b""
    writer.close()
    return response + rest


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=hostile)
def test_hostile_frames_against_a_real_server(chunks: list[bytes]) -> None:
    async def scenario() -> None:
        async with running_server(echo, CONFIG) as server:
            await _raw_session(server.host, server.port, chunks)
            async with connect(server.ws_url + "/") as ws:  # a fresh connection still works
                await ws.send("still there?")
                assert await asyncio.wait_for(ws.recv(), 5) == "still there?"

    asyncio.run(scenario())


def test_a_fuzz_session_can_also_be_polite() -> None:
    """The raw-socket harness itself: a valid message and close get the close answered (the
    echo may or may not beat it: the client had already closed)."""
    client = WSProtoConnection(ConnectionType.CLIENT)
    data = client.send(TextMessage(data="ok")) + client.send(CloseConnection(code=1000))

    async def scenario() -> None:
        async with running_server(echo, CONFIG) as server:
            written = await _raw_session(server.host, server.port, [data])
        events = _server_events(written)
        assert set(events) <= {TextMessage(data="ok"), CloseConnection(code=1000, reason="")}
        assert any(isinstance(e, CloseConnection) and e.code == 1000 for e in events)

    asyncio.run(scenario())
