"""A WebSocket client that stops reading costs only itself (issue 18, the server's half;
``docs/protocol.md`` 6.2): ``ws_output_limit_bytes``.

Sans-IO first (a :class:`~towpath.testing.memory_io.MemoryIO` plays the socket: what is written
and not ``take``-n is what the client left unread): the limit's arithmetic over HTTP/1.1 and
HTTP/2, the 1013 close and the cut when the close is not answered, and that direct mode still
waits. Then the forwarding app on a real server and socket (the in-memory layer, a test worker):
its reply loop keeps reading, the client is closed 1013, counted and logged, and the worker gets
one disconnect. ``tests/e2e/test_backpressure_server_e2e.py`` does it with real processes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner
from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from h2.errors import ErrorCodes
from h2.events import DataReceived, ResponseReceived, StreamReset
from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, Event, TextMessage

from tests.support.h2_memory import WS_CONNECT
from tests.support.raw_ws_client import RawWebSocket
from tests.support.waiting import WAIT
from towpath.cli import main
from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.forwarding import ForwardingApp
from towpath.interface.protocol.base import (
    ClientDisconnected,
    ClientTooSlow,
    Message,
    ServerContext,
)
from towpath.interface.protocol.h2 import H2Connection
from towpath.interface.protocol.websocket import (
    CLOSE_TIMEOUT_SECONDS,
    WebSocketConnection,
    WebSocketStream,
)
from towpath.interface.server import Server
from towpath.interface.slow_clients import SlowClients
from towpath.interface.transport import WRITE_HIGH_WATER_BYTES
from towpath.layers.base import ChannelFull
from towpath.layers.memory import InMemoryChannelLayer
from towpath.testing.memory_io import MemoryIO
from towpath.testing.server import running_server

#: a text message whose frame (unmasked, no deflate) is 100 bytes: 2 of header, 98 of text
TEXT = "x" * 98
FRAME = 100

Send = Any


class Held:
    """An app that accepts and hands its ``send`` to the test, then waits for the end."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.send: Send = None
        self.receive: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        self.send, self.receive = send, receive
        self.ready.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass


def text(n: int) -> Message:
    return {"type": "websocket.send", "text": f"{n:03d}{TEXT[3:]}"}


async def upgraded(
    limit: int | None, write_high_water: int | None = None
) -> tuple[MemoryIO, WebSocketStream, Held]:
    """A WebSocket over HTTP/1.1 with ``ws_output_limit_bytes`` in force (``None``: direct
    mode), accepted; the 101 head already read by the client."""
    app = Held()
    io = MemoryIO(app, write_high_water=write_high_water)
    context = ServerContext(ServerConfig(ws_per_message_deflate=False), ws_output_limit_bytes=limit)
    key = base64.b64encode(os.urandom(16))
    headers = [
        (b"host", b"example.com"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", b"13"),
    ]
    connection = WebSocketConnection.from_http11_upgrade(
        io, context, target=b"/", headers=headers, http_version="1.1", trailing=b""
    )
    async with asyncio.timeout(WAIT):
        await app.ready.wait()
    assert io.take().startswith(b"HTTP/1.1 101 ")
    assert connection.stream is not None
    return io, connection.stream, app


def parse(data: bytes) -> list[Event]:
    ws = WSProtoConnection(ConnectionType.CLIENT)
    ws.receive_data(data)
    return list(ws.events())


# -- the setting ------------------------------------------------------------------------------


def test_the_limit_is_a_positive_int_of_bytes_one_mib_by_default() -> None:
    assert ServerConfig().ws_output_limit_bytes == 1024 * 1024
    for bad in (0, -1, 1.5, "1M", True):
        with pytest.raises(ServerConfigError, match="ws_output_limit_bytes") as caught:
            ServerConfig(ws_output_limit_bytes=bad)  # type: ignore[arg-type]
        assert "--ws-output-limit" in str(caught.value)


def test_towpath_serve_ws_output_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[ServerConfig] = []

    async def fake_serve(app: Any, config: ServerConfig, **kwargs: Any) -> None:
        configs.append(config)

    monkeypatch.setattr("towpath.interface.server.serve", fake_serve)
    monkeypatch.setattr(
        "towpath.interface.forwarding.forwarding_app_from_settings", lambda *a, **k: object()
    )
    runner = CliRunner()
    for args, env, limit in (
        (["--ws-output-limit", "4096"], {}, 4096),
        ([], {"TOWPATH_WS_OUTPUT_LIMIT": "8192"}, 8192),
        ([], {}, 1024 * 1024),
    ):
        result = runner.invoke(main, ["serve", "--settings", "s", *args], env=env)
        assert result.exit_code == 0, result.output
        assert configs[-1].ws_output_limit_bytes == limit
    result = runner.invoke(main, ["serve", "--settings", "s", "--ws-output-limit", "0"])
    assert result.exit_code == 2 and "--ws-output-limit" in result.output
    result = runner.invoke(main, ["serve", "app:app", "--ws-output-limit", "4096"])
    assert result.exit_code == 2
    assert "--ws-output-limit applies to decoupled mode" in result.output


def test_only_an_app_that_asks_for_it_has_its_output_bounded() -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:
        return

    config = ServerConfig(ws_output_limit_bytes=4096)
    assert Server(plain, config).context.ws_output_limit_bytes is None  # direct mode
    forwarding = ForwardingApp(InMemoryChannelLayer())
    assert Server(forwarding, config).context.ws_output_limit_bytes == 4096


# -- HTTP/1.1, sans-IO -----------------------------------------------------------------------


async def test_output_up_to_the_limit_goes_out_unwaited_then_the_client_is_closed_1013() -> None:
    # the transport is "over its high-water mark" from the first frame: a paced send would wait
    io, stream, app = await upgraded(limit=10 * FRAME, write_high_water=FRAME // 2)
    assert not stream.paced
    for n in range(10):  # 1,000 bytes unread: at the limit, not past it
        await app.send(text(n))
    assert io.writing_paused and io.write_buffer_size() == 10 * FRAME
    with pytest.raises(ClientTooSlow) as caught:
        await app.send(text(10))
    assert (caught.value.unsent, caught.value.size, caught.value.limit) == (1000, FRAME, 1000)
    assert isinstance(caught.value, ClientDisconnected)  # to an app that knows no better
    events = parse(io.take())
    assert [e.data for e in events if isinstance(e, TextMessage)] == [
        text(n)["text"] for n in range(10)
    ]  # the 11th was not written
    close = events[-1]
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1013, "client too slow")
    assert stream.too_slow
    # the app is told at once, with why (it need not wait for a client that does not read)
    async with asyncio.timeout(WAIT):
        assert await app.receive() == {
            "type": "websocket.disconnect",
            "code": 1013,
            "reason": "client too slow",
        }
    with pytest.raises(ClientDisconnected):  # closing: nothing more goes out
        await app.send(text(11))
    # the client does not answer the close in time: the socket is cut, not closed (a close
    # would wait for it to read what is held)
    assert io.timers["close"] == CLOSE_TIMEOUT_SECONDS
    io.fire("close")
    assert io.aborted
    async with asyncio.timeout(WAIT):  # what the app was told stays what it is told
        assert (await app.receive())["code"] == 1013


async def test_a_client_that_reads_before_the_limit_gets_every_message_in_order() -> None:
    io, stream, app = await upgraded(limit=10 * FRAME)
    received: list[Event] = []
    for n in range(100):
        if io.write_buffer_size() + FRAME > 10 * FRAME:
            received += parse(io.take())  # the client reads, just in time
        await app.send(text(n))
    received += parse(io.take())
    assert [e.data for e in received if isinstance(e, TextMessage)] == [
        text(n)["text"] for n in range(100)
    ]
    assert not stream.too_slow and "close" not in io.timers


async def test_a_slow_client_that_answers_the_close_is_closed_not_cut() -> None:
    io, _stream, app = await upgraded(limit=2 * FRAME)
    await app.send(text(0))
    await app.send(text(1))
    with pytest.raises(ClientTooSlow):
        await app.send(text(2))
    client = WSProtoConnection(ConnectionType.CLIENT)
    client.receive_data(io.take())
    close = list(client.events())[-1]
    assert isinstance(close, CloseConnection) and close.code == 1013
    io.feed(client.send(close.response()))
    assert io.closed and not io.aborted
    async with asyncio.timeout(WAIT):
        assert (await app.receive())["code"] == 1013


async def test_a_message_bigger_than_the_limit_goes_to_a_client_with_nothing_unread() -> None:
    io, _stream, app = await upgraded(limit=FRAME)
    big = {"type": "websocket.send", "text": "b" * 1000}
    await app.send(big)  # nothing unread: it goes, whatever its size
    with pytest.raises(ClientTooSlow):
        await app.send(text(0))
    events = parse(io.take())
    assert isinstance(events[0], TextMessage) and len(events[0].data) == 1000
    assert isinstance(events[1], CloseConnection) and events[1].code == 1013


# -- HTTP/2 (RFC 8441), sans-IO --------------------------------------------------------------


async def test_over_http2_the_frames_the_stream_holds_are_what_counts() -> None:
    """The client leaves its window closed: past its 65,535 bytes the stream holds the frames;
    when those would pass the limit, close 1013, and the stream is reset when the close (stuck
    behind them) is not answered."""
    app = Held()
    io = MemoryIO(app)
    context = ServerContext(
        ServerConfig(ws_per_message_deflate=False), ws_output_limit_bytes=20 * FRAME
    )
    connection = H2Connection(io, context)
    io.attach(connection)
    client = H2Client(config=H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    io.feed(client.data_to_send())
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, WS_CONNECT)
    io.feed(client.data_to_send())
    async with asyncio.timeout(WAIT):
        await app.ready.wait()
    stream = io.streams[0]
    assert not stream.paced
    channel = connection.streams[stream_id]
    window = client.remote_settings.initial_window_size  # what the client takes unread
    sent = 0
    while sent * FRAME < window:  # the window takes these: nothing held yet
        await app.send(text(sent % 1000))
        sent += 1
    held = channel.unsent_bytes()  # type: ignore[union-attr]
    assert held == sent * FRAME - window
    while held + FRAME <= 20 * FRAME:
        await app.send(text(sent % 1000))
        sent += 1
        held += FRAME
        assert channel.unsent_bytes() == held  # type: ignore[union-attr]
    with pytest.raises(ClientTooSlow) as caught:
        await app.send(text(sent % 1000))
    assert caught.value.unsent == held and caught.value.limit == 20 * FRAME
    timer = f"ws:{stream_id}:close"
    assert io.timers[timer] == CLOSE_TIMEOUT_SECONDS
    io.fire(timer)
    await io.run_until(lambda: "flush" not in io.timers)
    events = client.receive_data(io.take())
    assert any(isinstance(e, ResponseReceived) for e in events)
    body = sum(e.flow_controlled_length for e in events if isinstance(e, DataReceived))
    assert body == window  # nothing past the window went out
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert resets and resets[0].error_code == ErrorCodes.CANCEL
    async with asyncio.timeout(WAIT):  # told at once, and the reset does not change it
        assert (await app.receive())["code"] == 1013


# -- the log ----------------------------------------------------------------------------------


def test_slow_clients_are_logged_once_per_burst_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Stats:
        websocket_1013_slow = 0

    now = [100.0]
    stats = Stats()
    slow = SlowClients(stats, clock=lambda: now[0], quiet_seconds=10.0)
    with caplog.at_level(logging.WARNING, "towpath.interface.forwarding"):
        slow.closed(["10.0.0.7", 5000], 1024)
        for port in range(5001, 5005):
            now[0] += 1
            slow.closed(["10.0.0.7", port], 1024)
        now[0] += 10
        slow.closed(["::1", 6000], 1024)
        slow.closed(None, 1024)
    assert stats.websocket_1013_slow == 7
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "10.0.0.7:5000" in lines[0] and "1024 bytes" in lines[0]
    assert "ws_output_limit_bytes" in lines[0] and "more since" not in lines[0]
    assert "[::1]:6000" in lines[1] and "and 4 more since the last such line" in lines[1]


# -- the forwarding app on a real server and socket -------------------------------------------


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    yield layer
    await layer.close()


@pytest.mark.timeout(30)
async def test_in_direct_mode_the_apps_send_still_waits_for_the_client() -> None:
    """uvicorn's behaviour, kept: the limit does not apply, the app's send waits while the
    socket's buffer is over its high-water mark, and goes on when the client reads."""
    limit = 64 * 1024
    chunk = "d" * 4000
    sent = 0
    progress = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            await send({"type": "websocket.send", "text": chunk})
            sent += 1
            progress.set()

    async with running_server(app, ws_output_limit_bytes=limit) as server:
        client = await RawWebSocket.connect(server.host, server.port, "/direct/")
        try:
            async with asyncio.timeout(WAIT):
                await client.read(lambda c: c.accepted)
                (protocol,) = server.server.state.connections
                while protocol.write_buffer_size() < WRITE_HIGH_WATER_BYTES:
                    progress.clear()
                    await progress.wait()
            assert not client.ended and sent * len(chunk) > limit  # no limit: no close
            waiting = sent
            await asyncio.sleep(0.1)  # the scenario: a while without reading
            assert sent == waiting  # the app's send waits for the client
            async with asyncio.timeout(WAIT):
                await client.read(lambda c: len(c.texts) > waiting)
                while sent == waiting:
                    progress.clear()
                    await progress.wait()
            assert client.texts[:waiting] == [chunk] * waiting
        finally:
            client.shut()


@pytest.mark.timeout(30)
async def test_the_forwarding_app_keeps_reading_and_closes_a_client_that_does_not(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    # past the transport's high-water mark (256 KiB), where a send that waited would wait
    limit = 512 * 1024
    app = ForwardingApp(layer, heartbeat_timeout_seconds=30.0)
    worker = await layer.new_channel("worker")
    chunk = "y" * 4000
    caplog.set_level(logging.WARNING, "towpath.interface.forwarding")
    async with running_server(app, ws_output_limit_bytes=limit) as server:
        client = await RawWebSocket.connect(server.host, server.port, "/slow/")
        port = client.sock.getsockname()[1]
        try:
            async with asyncio.timeout(WAIT):
                connect = await layer.receive("websocket.connect")
                reply = connect["reply_channel"]
                await layer.send(reply, {"type": "websocket.accept", "owner": worker})
                await client.read(lambda c: c.accepted)
            # the client reads nothing from here on; the worker keeps sending, 1,000 a second
            # at most (the scenario's pace, not a synchronisation): a server that waited for
            # the client would stop reading the reply channel, and with its 100 places full
            # this send would raise ChannelFull
            sent = 0
            async with asyncio.timeout(WAIT):
                while app.stats.websocket_1013_slow == 0:
                    try:
                        await layer.send(
                            reply, {"type": "websocket.send", "text": f"{sent} {chunk}"}
                        )
                    except ChannelFull:  # pragma: no cover - the failure this test exists for
                        pytest.fail(f"the reply channel filled after {sent} messages")
                    sent += 1
                    await asyncio.sleep(0.001)
                disconnect = await layer.receive(worker)
            assert disconnect["type"] == "websocket.disconnect"
            assert (disconnect["code"], disconnect["reason"]) == (1013, "client too slow")
            assert sent * 4000 > limit
            # it resumes reading: what it was sent, in order, then the close
            async with asyncio.timeout(WAIT):
                await client.read(lambda c: False)
            # (read within the close timeout: the close frame, not a reset)
            assert client.close is not None, client
            assert (client.close.code, client.close.reason) == (1013, "client too slow")
            assert client.texts == [f"{n} {chunk}" for n in range(len(client.texts))]
            assert len(client.texts) * 4000 > limit  # the output held for it went out
            async with asyncio.timeout(WAIT):  # the close was answered: the connection ends
                while server.server.state.connections:  # noqa: ASYNC110 (no event)
                    await asyncio.sleep(0.01)
        finally:
            client.shut()
        # exactly one disconnect: nothing else reached the worker
        await layer.send(worker, {"type": "sentinel"})
        async with asyncio.timeout(WAIT):
            while (message := await layer.receive(worker))["type"] == "towpath.heartbeat.ack":
                pass
        assert message == {"type": "sentinel"}
    assert app.stats.websocket_1013_slow == 1
    assert app.stats.websocket_disconnects == 1
    warnings = [r.getMessage() for r in caplog.records if "client too slow" in r.getMessage()]
    assert len(warnings) == 1
    assert f"127.0.0.1:{port}" in warnings[0]
    assert f"{limit} bytes" in warnings[0]
