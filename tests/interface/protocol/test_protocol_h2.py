"""HTTP/2 sans-IO: an ``H2Connection`` on a ``MemoryIO``, driven by an h2 client-side connection
that makes the frames and parses the answers. Flow control both ways, concurrency, resets,
trailers, HEAD, limits, GOAWAY on errors and on shutdown, the h2c and prior-knowledge hand-offs,
timers, and WebSocket over HTTP/2 (RFC 8441)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from tests.support.h2_memory import WS_CONNECT, Client, connect, settled
from towpath.compat import h2_reopen_after_goaway
from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    ServerContext,
    Stream,
)
from towpath.interface.protocol.h2 import H2Connection
from towpath.testing.memory_io import MemoryIO


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the whole request body and, in headers, what the scope said."""
    body = b""
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message["body"]
        messages += 1
        if not message["more_body"]:
            break
    headers = [
        (b"x-method", scope["method"].encode()),
        (b"x-path", scope["path"].encode()),
        (b"x-query", scope["query_string"]),
        (b"x-scheme", scope["scheme"].encode()),
        (b"x-version", scope["http_version"].encode()),
        (b"x-host", dict(scope["headers"]).get(b"host", b"")),
        (b"x-messages", str(messages).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_get_builds_the_scope_from_pseudo_headers() -> None:
    io, _connection, client = connect(echo)
    stream_id = client.request("GET", "/a%20b?x=1")
    await client.until(lambda: client.response(stream_id).ended)
    response = client.responses[stream_id]
    assert response.status == 200
    assert response.headers[b"x-method"] == b"GET"
    assert response.headers[b"x-path"] == b"/a b"
    assert response.headers[b"x-query"] == b"x=1"
    assert response.headers[b"x-scheme"] == b"https"
    assert response.headers[b"x-version"] == b"2"
    assert response.headers[b"x-host"] == b"example.com"
    assert response.headers[b"server"] == b"towpath"
    assert b"date" in response.headers
    assert response.body == b""
    assert not io.closed


async def test_split_cookie_fields_reach_the_app_as_one_header() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append([value for name, value in scope["headers"] if name == b"cookie"])
        await hello(scope, receive, send)

    _io, _connection, client = connect(app)
    stream_id = client.request(headers=[("cookie", "a=1"), ("x-other", "y"), ("cookie", "b=2")])
    await client.until(lambda: client.response(stream_id).ended)
    assert seen == [[b"a=1; b=2"]]


async def test_post_body_arrives_in_pieces_with_more_body() -> None:
    io, _connection, client = connect(echo)
    stream_id = client.request("POST", "/", body=b"abc", end=False)
    await io.run_until(lambda: bool(io.streams))
    await asyncio.sleep(0)
    client.h2.send_data(stream_id, b"def", end_stream=True)
    client.flush()
    await client.until(lambda: client.response(stream_id).ended)
    response = client.responses[stream_id]
    assert response.body == b"abcdef"
    assert int(response.headers[b"x-messages"]) >= 2


async def test_a_response_larger_than_the_window_completes_after_window_update() -> None:
    big = b"x" * 200_000

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big})

    io, _connection, client = connect(app)
    client.auto_ack = False
    stream_id = client.request()
    await io.run_until(lambda: bool(io.streams) and io.streams[0].blocked)
    await settled(io)
    client.read()
    response = client.responses[stream_id]
    assert len(response.body) == 65535  # the initial window, no more
    assert not response.ended
    # the client opens its windows: the rest flows and the app's send returns
    client.h2.acknowledge_received_data(65535, stream_id)
    client.h2.increment_flow_control_window(1_000_000)
    client.h2.increment_flow_control_window(1_000_000, stream_id)
    client.flush()
    await client.until(lambda: response.ended)
    assert bytes(response.body) == big
    await io.wait_apps()
    assert io.streams[0].response_bytes == len(big)


async def test_a_slow_app_applies_flow_control_to_the_upload() -> None:
    go = asyncio.Event()
    received = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await go.wait()
        while True:
            message = await receive()
            received.extend(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    io, _connection, client = connect(app)
    stream_id = client.request("POST", "/", end=False)
    window = client.h2.local_flow_control_window(stream_id)
    assert window == 65535
    client.h2.send_data(stream_id, b"y" * 16384)
    client.h2.send_data(stream_id, b"y" * 16384)
    client.h2.send_data(stream_id, b"y" * 16384)
    client.h2.send_data(stream_id, b"y" * 16383)
    client.flush()
    client.read()
    # the app took nothing: no WINDOW_UPDATE, the client may send no more
    assert client.h2.local_flow_control_window(stream_id) == 0
    go.set()
    await io.run_until(lambda: len(received) == 65535)
    await settled(io)
    client.read()
    assert client.h2.local_flow_control_window(stream_id) > 0
    client.h2.send_data(stream_id, b"z", end_stream=True)
    client.flush()
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].status == 204
    assert len(received) == 65536


async def test_unread_body_of_a_finished_or_reset_stream_is_given_back_to_the_connection() -> None:
    reset_seen = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/ignore":  # answers without reading the upload
            await hello(scope, receive, send)
        else:  # takes nothing until the client has gone
            await reset_seen.wait()

    io, _connection, client = connect(app)
    ignored = client.request("POST", "/ignore", body=b"a" * 40000, end=False)
    await client.until(lambda: client.response(ignored).reset is not None)
    assert client.responses[ignored].status == 200
    assert client.responses[ignored].reset == ErrorCodes.NO_ERROR  # stop uploading, no error
    waiting = client.request("POST", "/wait", body=b"b" * 40000, end=False)
    await io.run_until(lambda: len(io.streams) == 2)
    client.h2.reset_stream(waiting, ErrorCodes.CANCEL)
    client.flush()
    reset_seen.set()
    await io.wait_apps()
    client.read()
    # 80000 bytes went out on streams nobody read: the connection window is whole again
    assert client.h2.outbound_flow_control_window >= 65535 - 1000
    third = client.request("POST", "/ignore", body=b"c" * 60000)
    await client.until(lambda: client.response(third).ended)


async def test_many_concurrent_streams_all_answered_in_few_writes() -> None:
    writes = 0
    io, _connection, client = connect(echo)
    original = io.write

    def counting_write(data: bytes) -> None:
        nonlocal writes
        writes += 1
        original(data)

    io.write = counting_write  # type: ignore[method-assign]
    ids = [client.request("POST", f"/{n}", body=str(n).encode()) for n in range(50)]
    await client.until(lambda: all(client.response(i).ended for i in ids))
    for n, stream_id in enumerate(ids):
        assert client.responses[stream_id].body == str(n).encode()
        assert client.responses[stream_id].headers[b"x-path"] == f"/{n}".encode()
    assert writes <= 50 + 50 + 5  # one per request batch, one per app send; no per-frame writes


async def test_client_reset_gives_the_app_http_disconnect() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())  # the (empty) request
        seen.append(await receive())  # waits: the client resets
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except ClientDisconnected:
            seen.append("disconnected")

    io, connection, client = connect(app)
    stream_id = client.request()
    await io.run_until(lambda: len(seen) == 1)
    client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    await io.wait_apps()
    assert seen[1] == {"type": "http.disconnect"}
    assert seen[2] == "disconnected"
    assert connection.streams == {}
    assert io.timers.get("keep-alive") == 5.0


async def test_connection_lost_gives_http_disconnect() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())

    io, _connection, client = connect(app)
    client.request()
    await io.run_until(lambda: len(seen) == 1)
    io.lose()
    await io.wait_apps()
    assert seen[1] == {"type": "http.disconnect"}


async def test_trailers_follow_the_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")]})

    io = MemoryIO(app)
    context = ServerContext(ServerConfig(), extensions={"http.response.trailers": {}})
    connection = H2Connection(io, context)
    io.attach(connection)
    client = Client(io)
    client.h2.initiate_connection()
    client.flush()
    stream_id = client.request(headers=[("te", "trailers")])
    await client.until(lambda: client.response(stream_id).ended)
    response = client.responses[stream_id]
    assert response.body == b"part"
    assert response.trailers == {b"x-checksum": b"42"}


async def test_head_sends_headers_but_no_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"hello"})

    _io, _connection, client = connect(app)
    stream_id = client.request("HEAD")
    await client.until(lambda: client.response(stream_id).ended)
    response = client.responses[stream_id]
    assert response.headers[b"content-length"] == b"5"
    assert response.body == b""


async def test_body_over_max_body_bytes_is_answered_413() -> None:
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        while (await receive())["type"] == "http.request":
            pass

    io, _connection, client = connect(app, max_body_bytes=10)
    # announced: refused before the app runs
    first = client.request("POST", body=b"x" * 11, headers=[("content-length", "11")])
    await client.until(lambda: client.response(first).ended)
    assert client.responses[first].status == 413
    # its END_STREAM came with the request (in a DATA frame read in the same chunk): no reset
    assert client.responses[first].reset is None
    assert calls == 0
    # not announced: refused when the body passes the limit; the app sees a disconnect
    second = client.request("POST", body=b"x" * 8, end=False)
    await io.run_until(lambda: calls == 1)
    client.h2.send_data(second, b"x" * 8)
    client.flush()
    await client.until(lambda: client.response(second).reset is not None)
    assert client.responses[second].status == 413
    assert client.responses[second].reset == ErrorCodes.NO_ERROR
    await io.wait_apps()
    assert not io.closed


async def test_app_error_gives_500_or_a_reset() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise RuntimeError("boom")

    io, _connection, client = connect(app)
    early = client.request("GET", "/early")
    late = client.request("GET", "/late")
    await client.until(
        lambda: client.response(early).ended and client.response(late).reset is not None
    )
    assert client.responses[early].status == 500
    assert client.responses[late].reset == ErrorCodes.INTERNAL_ERROR
    assert not io.closed


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\ntransfer-encoding: chunked")],
        [(b"x-nul", b"a\x00b")],
        [(b"bad name", b"v")],
        [("str-name", "str-value")],
    ],
)
async def test_response_headers_a_proxy_could_split_on_are_refused_with_500(
    headers: list[tuple[Any, Any]],
) -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        except Exception as exc:
            errors.append(exc)
            raise

    io, _connection, client = connect(app)
    stream_id = client.request("GET", "/")
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].status == 500
    assert [type(error) for error in errors] == [ASGIProtocolError]
    assert not io.closed


def goaway_codes(data: bytes) -> list[int]:
    """The error codes of the GOAWAY frames in ``data`` (whole frames)."""
    codes = []
    while len(data) >= 9:
        size = 9 + int.from_bytes(data[:3], "big")
        if data[3] == GoAwayFrame.type:
            codes.append(int.from_bytes(data[13:17], "big"))
        data = data[size:]
    return codes


async def test_protocol_error_sends_goaway_and_closes() -> None:
    io, _connection, client = connect(hello)
    io.take()
    # a DATA frame on stream 0 is a connection error (PROTOCOL_ERROR): h2's GOAWAY, only
    io.feed(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    assert goaway_codes(io.written) == [ErrorCodes.PROTOCOL_ERROR]
    client.read()
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert io.closed


async def test_frame_size_error_gets_h2s_goaway_alone() -> None:
    io, _connection, _client = connect(hello)
    io.take()
    # a PING must be 8 bytes: h2 queues GOAWAY(FRAME_SIZE_ERROR); no second GOAWAY follows
    io.feed(b"\x00\x00\x01\x06\x00\x00\x00\x00\x00x")
    assert goaway_codes(io.written) == [ErrorCodes.FRAME_SIZE_ERROR]
    assert io.closed


async def test_garbage_instead_of_the_preface_is_a_goaway() -> None:
    io = MemoryIO(hello)
    connection = H2Connection(io, ServerContext(ServerConfig()))
    io.attach(connection)
    io.feed(b"GET / HTTP/1.1\r\n\r\n" * 3)
    assert io.closed
    # h2 raised before queuing a GOAWAY: ours went out, after the server's SETTINGS
    assert goaway_codes(io.take()) == [ErrorCodes.PROTOCOL_ERROR]


async def test_shutdown_sends_goaway_lets_streams_finish_then_closes() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello(scope, receive, send)

    io, connection, client = connect(app)
    first = client.request()
    await io.run_until(lambda: bool(io.streams))
    connection.shutdown()
    client.read()
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.NO_ERROR
    assert client.goaway.last_stream_id == first
    assert not io.closed
    release.set()
    await io.wait_apps()
    await client.until(lambda: io.closed)
    assert client.responses[first].body == b"hello"


async def test_streams_after_goaway_are_refused() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello(scope, receive, send)

    io, connection, client = connect(app)
    first = client.request()
    await io.run_until(lambda: bool(io.streams))
    connection.shutdown()
    client.read()
    # a request the client sent before it saw the GOAWAY is refused
    later = client.request()
    client.read()
    assert client.responses[later].reset == ErrorCodes.REFUSED_STREAM
    release.set()
    await io.wait_apps()
    await client.until(lambda: io.closed)
    assert client.responses[first].status == 200


async def test_idle_connection_closes_on_keep_alive_timer() -> None:
    io, _connection, client = connect(hello, keep_alive_timeout_seconds=7.0)
    assert io.timers["keep-alive"] == 7.0
    stream_id = client.request()
    io.fire("keep-alive")  # fires while a stream is open: ignored
    assert not io.closed
    await client.until(lambda: client.response(stream_id).ended)
    await io.wait_apps()
    assert io.timers["keep-alive"] == 7.0  # re-armed when the last stream ended
    io.fire("keep-alive")
    client.read()
    assert client.goaway is not None
    assert io.closed


async def test_client_goaway_with_requests_in_flight_still_answers_them() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello(scope, receive, send)

    io, _connection, client = connect(app)
    stream_id = client.request()
    await io.run_until(lambda: bool(io.streams))
    client.h2.close_connection()
    client.flush()
    h2_reopen_after_goaway(client.h2)  # the client still reads its response
    assert not io.closed
    release.set()
    await io.wait_apps()
    await client.until(lambda: io.closed)
    assert client.responses[stream_id].body == b"hello"


async def test_h2c_upgrade_serves_the_request_as_stream_1() -> None:
    io = MemoryIO(echo)
    context = ServerContext(ServerConfig())
    client = Client(io)
    settings = client.h2.initiate_upgrade_connection()
    assert settings is not None
    preface = client.h2.data_to_send()
    H2Connection.from_h2c_upgrade(
        io,
        context,
        method="GET",
        target=b"/up?q=1",
        headers=[
            (b"host", b"example.com"),
            (b"connection", b"Upgrade, HTTP2-Settings"),
            (b"upgrade", b"h2c"),
            (b"http2-settings", settings),
        ],
        settings_header=settings,
        trailing=preface,
    )
    assert isinstance(io.connection, H2Connection)
    await client.until(lambda: client.response(1).ended)
    response = client.responses[1]
    assert response.status == 200
    assert response.headers[b"x-path"] == b"/up"
    assert response.headers[b"x-host"] == b"example.com"
    # and the connection goes on as HTTP/2
    stream_id = client.request("GET", "/next")
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].headers[b"x-path"] == b"/next"


# not base64; base64 of 3 bytes, not a SETTINGS payload (hyperframe's error, not h2's)
@pytest.mark.parametrize("settings", [b"!!!not base64!!!", b"AAAA"])
async def test_h2c_upgrade_with_a_bad_settings_header_is_a_goaway(settings: bytes) -> None:
    io = MemoryIO(echo)
    H2Connection.from_h2c_upgrade(
        io,
        ServerContext(ServerConfig()),
        method="GET",
        target=b"/",
        headers=[],
        settings_header=settings,
    )
    assert io.closed
    assert not io.streams


async def test_prior_knowledge_bytes_without_connection_made() -> None:
    """HTTP/1.1 hands over on seeing the preface: no connection_made, the bytes fed at once."""
    io = MemoryIO(hello)
    connection = H2Connection(io, ServerContext(ServerConfig()))
    io.switch_protocol(connection)
    client = Client(io)
    client.h2.initiate_connection()
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(
        stream_id,
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
        end_stream=True,
    )
    data = client.h2.data_to_send()
    assert data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    io.feed(data)
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].body == b"hello"
    assert client.responses[stream_id].headers[b"x-a"] == b"1"


async def test_settings_from_the_config_are_announced() -> None:
    io = MemoryIO(hello)
    connection = H2Connection(
        io, ServerContext(ServerConfig(h2_max_concurrent_streams=7, max_header_bytes=4096))
    )
    io.attach(connection)
    client = Client(io)
    client.h2.initiate_connection()
    client.flush()
    client.read()
    remote = client.h2.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.max_header_list_size == 4096
    assert remote.enable_connect_protocol == 1


async def test_access_log_gets_one_row_per_stream() -> None:
    rows: list[tuple[str, int | None, int]] = []

    def log(action: str, stream: Stream) -> None:
        rows.append((action, stream.status, stream.response_bytes))

    io = MemoryIO(hello)
    connection = H2Connection(io, ServerContext(ServerConfig(), access_log=log))
    io.attach(connection)
    client = Client(io)
    client.h2.initiate_connection()
    client.flush()
    ids = [client.request() for _ in range(3)]
    await client.until(lambda: all(client.response(i).ended for i in ids))
    await io.wait_apps()
    assert rows == [("http.complete", 200, 5)] * 3


async def test_bad_app_messages_are_asgi_errors_and_the_stream_is_reset_or_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.body", "body": b"no start"})

    _io, _connection, client = connect(app)
    stream_id = client.request()
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].status == 500


async def test_an_informational_status_is_not_a_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 103, "headers": []})

    _io, _connection, client = connect(app)
    stream_id = client.request()
    await client.until(lambda: client.response(stream_id).ended)
    assert client.responses[stream_id].status == 500


@pytest.mark.parametrize("subprotocol", [None, "chat"])
async def test_websocket_over_http2(subprotocol: str | None) -> None:
    from wsproto.connection import Connection as WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import CloseConnection, TextMessage

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert scope["http_version"] == "2"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"].upper()})

    io, connection, client = connect(app)
    stream_id = client.h2.get_next_available_stream_id()
    headers = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/chat"),
        ("sec-websocket-version", "13"),
    ]
    if subprotocol:
        headers.append(("sec-websocket-protocol", "chat, other"))
    client.h2.send_headers(stream_id, headers)
    client.flush()
    await client.until(lambda: b":status" in client.response(stream_id).headers)
    response = client.responses[stream_id]
    assert response.status == 200
    if subprotocol:
        assert response.headers[b"sec-websocket-protocol"] == b"chat"
    ws = WSConnection(ConnectionType.CLIENT)
    client.h2.send_data(stream_id, ws.send(TextMessage(data="hi")))
    client.flush()
    await client.until(lambda: len(response.body) >= 4)
    ws.receive_data(bytes(response.body))
    events = list(ws.events())
    assert isinstance(events[0], TextMessage) and events[0].data == "HI"
    response.body.clear()
    client.h2.send_data(stream_id, ws.send(CloseConnection(code=1000)), end_stream=True)
    client.flush()
    await io.wait_apps()
    await client.until(lambda: response.ended)
    assert connection.streams == {}


async def test_websocket_over_http2_denied_before_accept() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    io, connection, client = connect(app)
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    await io.wait_apps()
    client.read()
    assert client.responses[stream_id].status == 403
    assert client.responses[stream_id].ended
    assert connection.streams == {}
    # a plain CONNECT is not for us
    other = client.h2.get_next_available_stream_id()
    client.h2.send_headers(other, [(":method", "CONNECT"), (":authority", "example.com:443")])
    client.flush()
    client.read()
    assert client.responses[other].status == 501
    # the client's half is still open: it is told to stop sending, without an error
    assert client.responses[other].reset == ErrorCodes.NO_ERROR


@pytest.mark.parametrize("seed", range(20))
async def test_random_bytes_never_raise(seed: int) -> None:
    import random

    rng = random.Random(seed)
    io, _connection, client = connect(echo)
    client.request("POST", "/", body=b"x" * rng.randrange(100), end=False)
    for _ in range(20):
        if io.closed:
            break
        io.feed(rng.randbytes(rng.randrange(1, 64)))
    if not io.closed:  # garbage that reads as the start of a long frame: h2 waits for more
        io.lose()
    await io.wait_apps()


async def test_shutdown_closes_a_websocket_over_http2_with_1001() -> None:
    from wsproto.connection import Connection as WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import CloseConnection

    codes: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        codes.append(message["code"])

    io, connection, client = connect(app)
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    response = client.response(stream_id)
    await client.until(lambda: b":status" in response.headers)
    connection.shutdown(1001)
    client.read()
    assert client.goaway is not None
    ws = WSConnection(ConnectionType.CLIENT)
    ws.receive_data(bytes(response.body))
    (event,) = list(ws.events())
    assert isinstance(event, CloseConnection) and event.code == 1001
    assert not io.closed
    client.h2.send_data(stream_id, ws.send(event.response()), end_stream=True)
    client.flush()
    await io.wait_apps()
    await client.until(lambda: io.closed)
    assert response.ended
    assert codes == [1001]


async def test_a_big_websocket_message_waits_for_the_window() -> None:
    from wsproto.connection import Connection as WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import BytesMessage

    big = b"w" * 100_000

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": big})
        await send({"type": "websocket.close"})

    io, _connection, client = connect(app, ws_per_message_deflate=False)
    client.auto_ack = False
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    await io.run_until(lambda: bool(io.streams) and io.streams[0].blocked)
    await settled(io)
    client.read()
    response = client.responses[stream_id]
    assert len(response.body) == 65535
    client.h2.increment_flow_control_window(200_000)
    client.h2.increment_flow_control_window(200_000, stream_id)
    client.flush()
    await io.run_until(lambda: not io.streams[0].blocked)
    client.read()
    ws = WSConnection(ConnectionType.CLIENT)
    ws.receive_data(bytes(response.body))
    events = list(ws.events())
    assert isinstance(events[0], BytesMessage) and events[0].data == big
    io.lose()
    await io.wait_apps()


@pytest.mark.parametrize("accept", [True, False])
async def test_websocket_over_http2_ends_when_the_client_ends_its_stream(accept: bool) -> None:
    """END_STREAM without a close frame is the client's FIN: the app gets 1006 and the
    server ends its half too (END_STREAM after an accept, else RST_STREAM), so the stream is
    released rather than left half-open."""
    messages: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append(await receive())
        if accept:
            await send({"type": "websocket.accept"})
        messages.append(await receive())

    io, connection, client = connect(app)
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    response = client.response(stream_id)
    if accept:
        await client.until(lambda: b":status" in response.headers)
    else:
        await io.run_until(lambda: len(messages) == 1)
    client.h2.end_stream(stream_id)
    client.flush()
    await io.wait_apps()
    await client.until(lambda: response.ended or response.reset is not None)
    assert messages[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    if accept:
        assert response.status == 200 and response.ended
    else:
        assert response.reset == ErrorCodes.CANCEL
    assert connection.streams == {}
    assert "keep-alive" in io.timers


async def test_websocket_over_http2_app_learns_when_h2_refuses_its_stream() -> None:
    """When h2 refuses a send on the stream (it resets it), the WebSocket ends for the app
    too: its receive gives the disconnect instead of waiting forever."""
    from h2.exceptions import StreamClosedError

    messages: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append(await receive())
        await send({"type": "websocket.accept"})
        messages.append(await receive())

    io, connection, client = connect(app)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise StreamClosedError(1)

    connection.h2.send_headers = refuse  # type: ignore[method-assign]
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    await io.run_until(lambda: len(messages) == 2)
    assert messages[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert connection.streams == {}


_GOOD_HEAD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


@pytest.mark.parametrize(
    ("head", "why"),
    [
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")], "no :path"),
        ([*_GOOD_HEAD, (b":method", b"GET")], "repeated :method"),
        ([(b"x-a", b"1"), *_GOOD_HEAD], "pseudo-header after a regular field"),
        ([*_GOOD_HEAD, (b":status", b"200")], "response pseudo-header"),
        ([*_GOOD_HEAD, (b"X-Upper", b"1")], "uppercase name"),
        ([*_GOOD_HEAD, (b"connection", b"keep-alive")], "connection-specific field"),
        ([*_GOOD_HEAD, (b"transfer-encoding", b"chunked")], "connection-specific field"),
        ([*_GOOD_HEAD, (b"te", b"gzip")], "te other than trailers"),
        ([*_GOOD_HEAD, (b"x-a", b"1\r\nx-b: 2")], "CR LF in a value"),
        ([*_GOOD_HEAD, (b"x-a", b" padded")], "leading whitespace"),
        ([*_GOOD_HEAD, (b"host", b"other")], "host differs from :authority"),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")], "no authority"),
        ([*_GOOD_HEAD, (b":protocol", b"websocket")], ":protocol without CONNECT"),
        ([(b":method", b"CONNECT"), (b":authority", b"a"), (b":path", b"/")], "CONNECT with :path"),
    ],
)
async def test_a_malformed_request_head_resets_only_its_stream(
    head: list[tuple[bytes, bytes]], why: str
) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await hello(scope, receive, send)

    io = MemoryIO(app)
    io.attach(H2Connection(io, ServerContext(ServerConfig())))
    client = Client(io)
    # a client that sends what it is given, unchecked, as a broken or hostile peer would
    client.h2 = H2Client(
        config=H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    client.h2.initiate_connection()
    client.flush()
    bad = client.h2.get_next_available_stream_id()
    client.h2.send_headers(bad, head, end_stream=True)
    client.flush()
    good = client.request("GET", "/after")
    await client.until(lambda: client.response(good).ended)
    assert client.responses[bad].reset == ErrorCodes.PROTOCOL_ERROR, why
    assert client.responses[good].status == 200
    assert seen == ["/after"]
    assert not io.closed


async def test_split_cookies_are_joined_and_authority_becomes_host() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await hello(scope, receive, send)

    _io, _connection, client = connect(app)
    stream_id = client.request("GET", "/", headers=[("cookie", "a=1"), ("cookie", "b=2")])
    await client.until(lambda: client.response(stream_id).ended)
    headers = scopes[0]["headers"]
    assert headers[0] == (b"host", b"example.com")
    assert (b"cookie", b"a=1; b=2") in headers
