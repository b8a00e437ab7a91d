"""WebSocket over HTTP/1.1, sans-IO: ``WebSocketConnection.from_http11_upgrade`` on a MemoryIO,
with wsproto's client-side frame protocol making and parsing the frames."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    ServerContext,
    Stream,
)
from towpath.interface.protocol.websocket import (
    WebSocketConnection,
    WebSocketStream,
    handshake_problem,
)
from towpath.testing.memory_io import MemoryIO

KEY = base64.b64encode(os.urandom(16))


def handshake_headers(
    *, subprotocols: str | None = None, deflate: bool = False, **changes: bytes | None
) -> list[tuple[bytes, bytes]]:
    fields: dict[str, bytes | None] = {
        "host": b"example.com",
        "upgrade": b"websocket",
        "connection": b"Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": b"13",
    }
    fields.update({name.replace("_", "-"): value for name, value in changes.items()})
    headers = [(name.encode(), value) for name, value in fields.items() if value is not None]
    if subprotocols is not None:
        headers.append((b"sec-websocket-protocol", subprotocols.encode()))
    if deflate:
        headers.append((b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"))
    return headers


class Peer:
    """The client end: upgrades a MemoryIO connection and speaks wsproto frames to it."""

    def __init__(self, app: Any, config: ServerConfig | None = None, **kwargs: Any) -> None:
        self.io = MemoryIO(app)
        self.log: list[tuple[str, int | None]] = []
        self.context = ServerContext(
            config or ServerConfig(),
            access_log=lambda action, stream: self.log.append((action, stream.status)),
        )
        trailing = kwargs.pop("trailing", b"")
        extra_headers = kwargs.pop("extra_headers", [])
        self.connection = WebSocketConnection.from_http11_upgrade(
            self.io,
            self.context,
            target=b"/chat?room=1",
            headers=handshake_headers(**kwargs) + extra_headers,
            http_version="1.1",
            trailing=trailing,
        )
        self.head = b""
        self.status = 0
        self.response_headers: dict[bytes, bytes] = {}
        self.body = b""
        self.ws: WSProtoConnection | None = None

    @property
    def stream(self) -> WebSocketStream:
        assert self.connection.stream is not None
        return self.connection.stream

    async def handshake(self) -> int:
        """Run until the app answered the handshake; parse the response head."""
        await self.io.run_until(lambda: b"\r\n\r\n" in self.io.written)
        head, _, rest = self.io.take().partition(b"\r\n\r\n")
        self.head = head
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.response_headers[name.strip().lower()] = value.strip()
        if self.status == 101:
            extensions = []
            offer = self.response_headers.get(b"sec-websocket-extensions")
            if offer is not None:
                deflate = PerMessageDeflate()
                deflate.finalize(offer.decode())
                extensions.append(deflate)
            self.ws = WSProtoConnection(ConnectionType.CLIENT, extensions, rest)
        else:
            self.body = rest
        return self.status

    def send(self, event: Event) -> None:
        assert self.ws is not None
        self.io.feed(self.ws.send(event))

    def events(self) -> list[Event]:
        assert self.ws is not None
        self.ws.receive_data(self.io.take())
        return list(self.ws.events())

    async def next_events(self, count: int = 1) -> list[Event]:
        got: list[Event] = []

        def enough() -> bool:
            got.extend(self.events())
            return len(got) >= count

        await self.io.run_until(enough)
        return got


async def echo(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
        )


async def test_handshake_scope_and_echo_of_text_and_binary() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await echo(scope, receive, send)

    peer = Peer(app, subprotocols="chat, superchat")
    assert await peer.handshake() == 101
    assert peer.response_headers[b"sec-websocket-accept"] == generate_accept_token(KEY)
    assert peer.response_headers[b"upgrade"] == b"websocket"
    assert b"sec-websocket-protocol" not in peer.response_headers
    scope = scopes[0]
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert "websocket.http.response" in scope["extensions"]
    peer.send(TextMessage(data="héllo"))
    peer.send(BytesMessage(data=b"\x00\x01"))
    events = await peer.next_events(2)
    assert events == [TextMessage(data="héllo"), BytesMessage(data=b"\x00\x01")]
    peer.send(CloseConnection(code=1000, reason="bye"))
    events = await peer.next_events()
    assert isinstance(events[0], CloseConnection) and events[0].code == 1000
    await peer.io.wait_apps()
    assert peer.io.closed
    assert peer.log == [
        ("websocket.connecting", None),
        ("websocket.connected", 101),
        ("websocket.disconnected", 101),
    ]


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"sec_websocket_version": b"8"}, 426, b"version"),
        ({"sec_websocket_version": None}, 426, b"version"),
        ({"sec_websocket_key": None}, 400, b"Missing"),
        ({"sec_websocket_key": b"not base64!"}, 400, b"Invalid"),
        ({"sec_websocket_key": base64.b64encode(b"short")}, 400, b"Invalid"),
    ],
)
async def test_bad_handshake_gets_400_or_426(
    changes: dict[str, bytes | None], status: int, reason: bytes
) -> None:
    started: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope)

    peer = Peer(app, **changes)
    assert await peer.handshake() == status
    assert reason in peer.body
    assert peer.io.closed and not started
    if status == 426:
        assert peer.response_headers[b"sec-websocket-version"] == b"13"
    peer.connection.data_received(b"more junk")  # ignored
    peer.connection.connection_lost()


def test_handshake_problem_over_http2_needs_no_key() -> None:
    assert handshake_problem([(b"sec-websocket-version", b"13")], http2=True) is None
    assert handshake_problem([], http2=True) is not None


async def test_accept_with_subprotocol_and_headers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "superchat",
                "headers": [(b"x-extra", b"1"), (b"Sec-WebSocket-Protocol", b"evil")],
            }
        )

    peer = Peer(app, subprotocols="chat, superchat")
    assert await peer.handshake() == 101
    assert peer.response_headers[b"sec-websocket-protocol"] == b"superchat"
    assert peer.response_headers[b"x-extra"] == b"1"
    assert peer.head.lower().count(b"sec-websocket-protocol") == 1
    await peer.io.wait_apps()
    assert (await peer.next_events())[0] == CloseConnection(code=1000, reason="")


async def test_subprotocol_not_offered_or_not_allowed_is_refused_with_403() -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", "subprotocol": scope["query_string"].decode()})
        except ASGIProtocolError as exc:
            errors.append(exc)
            raise

    peer = Peer(app, subprotocols="chat")
    peer.stream.scope["query_string"] = b"other"
    assert await peer.handshake() == 403
    await peer.io.wait_apps()
    assert errors and "did not offer" in str(errors[0])

    peer = Peer(app, ServerConfig(ws_protocols=("v2",)), subprotocols="chat")
    peer.stream.scope["query_string"] = b"chat"
    assert await peer.handshake() == 403
    await peer.io.wait_apps()
    assert peer.log[-1] == ("websocket.rejected", 403)


async def test_close_before_accept_is_403_and_app_returning_early_too() -> None:
    async def closes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4000})
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"

    peer = Peer(closes)
    assert await peer.handshake() == 403
    await peer.io.wait_apps()
    assert peer.io.closed
    assert peer.log[-1] == ("websocket.rejected", 403)

    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    peer = Peer(returns)
    assert await peer.handshake() == 403

    async def raises(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    peer = Peer(raises)
    assert await peer.handshake() == 500


async def test_denial_response_is_a_real_http_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})

    peer = Peer(app)
    assert await peer.handshake() == 401
    await peer.io.wait_apps()
    assert peer.body + peer.io.take() == b"who are you?"
    assert peer.response_headers[b"www-authenticate"] == b"Basic"
    assert peer.response_headers[b"connection"] == b"close"
    assert peer.io.closed and not peer.io.aborted
    assert peer.log[-1] == ("websocket.rejected", 401)


async def test_denial_in_one_body_gets_a_content_length() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"nope"})

    peer = Peer(app)
    assert await peer.handshake() == 404
    assert peer.response_headers[b"content-length"] == b"4"


async def test_app_failing_during_a_denial_gets_500_or_a_cut() -> None:
    async def before_body(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        raise RuntimeError("boom")

    peer = Peer(before_body)
    assert await peer.handshake() == 500

    async def mid_body(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"par", "more_body": True})
        raise RuntimeError("boom")

    peer = Peer(mid_body)
    assert await peer.handshake() == 401
    await peer.io.wait_apps()
    assert peer.io.aborted
    assert peer.log[-1] == ("websocket.rejected", 401)


async def test_server_close_with_code_and_reason_then_client_answer() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "go away"})
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.send", "text": "late"})
        received.append(await receive())

    peer = Peer(app)
    assert await peer.handshake() == 101
    events = await peer.next_events()
    assert events == [CloseConnection(code=4001, reason="go away")]
    assert "close" in peer.io.timers and not peer.io.closed
    peer.send(CloseConnection(code=4001, reason="go away"))
    await peer.io.wait_apps()
    assert received == [{"type": "websocket.disconnect", "code": 4001, "reason": "go away"}]
    assert peer.io.closed and "close" not in peer.io.timers


async def test_server_close_without_an_answer_ends_on_the_close_timer() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    peer = Peer(app)
    await peer.handshake()
    assert await peer.next_events() == [CloseConnection(code=1000, reason="")]
    peer.io.fire("close")
    assert peer.io.closed
    assert peer.log[-1] == ("websocket.disconnected", 101)


async def test_client_close_codes_reach_the_app() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        received.append(await receive())
        received.append(await receive())  # the disconnect again, every time
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.send", "bytes": b"x"})

    peer = Peer(app)
    await peer.handshake()
    peer.send(CloseConnection(code=4321, reason="done"))
    await peer.io.wait_apps()
    assert received == [{"type": "websocket.disconnect", "code": 4321, "reason": "done"}] * 2
    assert peer.events() == [CloseConnection(code=4321, reason="done")]

    received.clear()
    peer = Peer(app)
    await peer.handshake()
    peer.io.feed(b"\x88\x80\x00\x00\x00\x00")  # a close frame with no status code
    await peer.io.wait_apps()
    assert received[0]["code"] == 1005


async def test_lost_connection_is_1006() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        received.append(await receive())

    peer = Peer(app)
    await peer.handshake()
    peer.io.lose()
    await peer.io.wait_apps()
    assert received == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert not peer.io.timers


async def test_lost_before_accept_gives_connect_then_disconnect() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        received.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.accept"})

    peer = Peer(app)
    peer.io.lose()
    await peer.io.wait_apps()
    assert [m["type"] for m in received] == ["websocket.connect", "websocket.disconnect"]
    assert peer.log[-1] == ("websocket.rejected", None)


async def test_app_returning_closes_1000_and_raising_closes_1011() -> None:
    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    peer = Peer(returns)
    await peer.handshake()
    await peer.io.wait_apps()
    assert peer.events() == [CloseConnection(code=1000, reason="")]

    async def raises(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise RuntimeError("boom")

    peer = Peer(raises)
    await peer.handshake()
    await peer.io.wait_apps()
    assert peer.events() == [CloseConnection(code=1011, reason="")]


async def test_bad_asgi_messages_raise_asgi_protocol_error() -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        for message in (
            {"type": "websocket.send", "text": "early"},
            {"type": "websocket.http.response.body", "body": b""},
            {"type": "http.response.start", "status": 200},
            {"type": "websocket.http.response.start", "status": 101},
        ):
            with pytest.raises(ASGIProtocolError) as info:
                await send(message)
            errors.append(str(info.value))
        await send({"type": "websocket.accept"})
        with pytest.raises(ASGIProtocolError):
            await send({"type": "websocket.send", "text": "a", "bytes": b"b"})
        with pytest.raises(ASGIProtocolError):
            await send({"type": "websocket.accept"})
        with pytest.raises(ASGIProtocolError):
            await send({"type": "websocket.http.response.start", "status": 403})
        with pytest.raises(ASGIProtocolError):
            await send({"type": "websocket.send", "text": 123})
        with pytest.raises(ASGIProtocolError, match="'text' must be str"):
            await send({"type": "websocket.send", "text": b"bytes are not text"})
        with pytest.raises(ASGIProtocolError, match="'bytes' must be bytes"):
            await send({"type": "websocket.send", "bytes": "text is not bytes"})
        for code in (999, 1005, 5000, "1000"):
            with pytest.raises(ASGIProtocolError):
                await send({"type": "websocket.close", "code": code})

    peer = Peer(app)
    await peer.handshake()
    await peer.io.wait_apps()
    assert len(errors) == 4
    assert peer.events() == [CloseConnection(code=1000, reason="")]


async def test_fragmented_messages_are_reassembled() -> None:
    peer = Peer(echo)
    await peer.handshake()
    peer.send(TextMessage(data="hel", message_finished=False))
    peer.send(TextMessage(data="lo ", message_finished=False))
    peer.send(Ping(payload=b"in between"))
    peer.send(TextMessage(data="wörld", message_finished=True))
    peer.send(BytesMessage(data=b"ab", message_finished=False))
    peer.send(BytesMessage(data=b"cd", message_finished=True))
    events = await peer.next_events(3)
    assert events == [
        Pong(payload=b"in between"),
        TextMessage(data="hello wörld"),
        BytesMessage(data=b"abcd"),
    ]


async def test_message_too_big_closes_1009_without_buffering_it() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "websocket.disconnect":
                return

    peer = Peer(app, ServerConfig(max_websocket_message_bytes=1000))
    await peer.handshake()
    peer.send(BytesMessage(data=b"x" * 1000))  # exactly the limit: fine
    peer.send(BytesMessage(data=b"y" * 600, message_finished=False))
    assert peer.ws is not None
    frame = peer.ws.send(BytesMessage(data=b"z" * 600))
    peer.io.feed(frame[:100])  # the limit trips on a partial frame already
    assert peer.stream._size <= 1000
    peer.io.feed(frame[100:])
    await peer.io.wait_apps()
    assert received[0] == {"type": "websocket.receive", "bytes": b"x" * 1000}
    assert received[-1]["code"] == 1009
    assert peer.events() == [CloseConnection(code=1009, reason="message too big")]
    assert peer.io.closed


async def test_invalid_utf8_closes_1007() -> None:
    peer = Peer(echo)
    await peer.handshake()
    # a masked text frame with invalid UTF-8 (mask of zeros keeps the payload readable)
    peer.io.feed(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
    await peer.io.wait_apps()
    events = peer.events()
    # the reason is a fixed text, not the decoder's exception message
    assert events[0] == CloseConnection(code=1007, reason="invalid frame payload data")
    assert peer.io.closed


@pytest.mark.parametrize(
    "frame",
    [
        b"\x81\x02ab",  # unmasked client frame
        b"\x89\xfe\x00\x80" + b"\x00" * 4,  # control frame with a 2-byte length
        b"\x80\x81\x00\x00\x00\x00a",  # continuation with nothing to continue
        b"\x83\x80\x00\x00\x00\x00",  # reserved opcode 3
        b"\xc1\x81\x00\x00\x00\x00a",  # RSV1 without an extension
        b"\x88\x81\x00\x00\x00\x00a",  # close with a 1-byte payload
    ],
)
async def test_protocol_errors_close_1002(frame: bytes) -> None:
    peer = Peer(echo)
    await peer.handshake()
    peer.io.feed(frame)
    await peer.io.wait_apps()
    events = peer.events()
    assert isinstance(events[0], CloseConnection) and events[0].code == 1002
    assert peer.io.closed
    peer.io.feed(b"\x81\x80\x00\x00\x00\x00")  # later bytes are ignored


async def test_pings_are_answered_and_keepalive_pings_expect_pongs() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        received.append(await receive())

    config = ServerConfig(ws_ping_interval_seconds=7.0, ws_ping_timeout_seconds=3.0)
    peer = Peer(app, config)
    await peer.handshake()
    peer.send(Ping(payload=b"hi"))
    assert peer.events() == [Pong(payload=b"hi")]
    assert peer.io.timers["ping"] == 7.0
    peer.io.fire("ping")
    [ping] = peer.events()
    assert isinstance(ping, Ping)
    assert peer.io.timers["pong"] == 3.0
    peer.send(ping.response())
    assert "pong" not in peer.io.timers and peer.io.timers["ping"] == 7.0
    peer.io.fire("ping")
    peer.events()
    peer.io.fire("pong")  # no pong this time: dropped
    assert peer.io.aborted
    await peer.io.wait_apps()
    assert received == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


async def test_websocket_timeout_closes_1000() -> None:
    peer = Peer(echo, ServerConfig(websocket_timeout_seconds=60.0))
    await peer.handshake()
    assert peer.io.timers["lifetime"] == 60.0
    peer.io.fire("lifetime")
    assert peer.events() == [CloseConnection(code=1000, reason="")]
    peer.send(CloseConnection(code=1000))
    await peer.io.wait_apps()
    assert peer.io.closed


async def test_shutdown_closes_accepted_sockets_with_1001_or_the_given_code() -> None:
    peer = Peer(echo)
    await peer.handshake()
    peer.connection.shutdown()
    assert peer.events() == [CloseConnection(code=1001, reason="Server shutdown")]
    peer.send(CloseConnection(code=1001))
    await peer.io.wait_apps()

    peer = Peer(echo)
    await peer.handshake()
    peer.connection.shutdown(1012)
    assert peer.events()[0].code == 1012  # type: ignore[attr-defined]


async def test_permessage_deflate_is_negotiated_and_works_both_ways() -> None:
    peer = Peer(echo, deflate=True)
    await peer.handshake()
    assert peer.response_headers[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
    text = "compress me " * 1000
    peer.send(TextMessage(data=text))
    [event] = await peer.next_events()
    assert event == TextMessage(data=text)
    assert peer.stream.response_bytes < 1000  # it went out compressed

    peer = Peer(echo, ServerConfig(ws_per_message_deflate=False), deflate=True)
    await peer.handshake()
    assert b"sec-websocket-extensions" not in peer.response_headers


async def test_deflate_bomb_is_stopped_at_the_message_limit() -> None:
    peer = Peer(echo, ServerConfig(max_websocket_message_bytes=64 * 1024), deflate=True)
    await peer.handshake()
    assert peer.ws is not None
    frame = peer.ws.send(BytesMessage(data=b"\x00" * (8 * 1024 * 1024)))
    assert len(frame) < 16 * 1024
    peer.io.feed(frame)
    await peer.io.wait_apps()
    assert peer.events()[0].code == 1009  # type: ignore[attr-defined]


async def test_frames_sent_with_the_handshake_wait_for_the_accept() -> None:
    client = WSProtoConnection(ConnectionType.CLIENT)
    early = client.send(TextMessage(data="early"))
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await accepted.wait()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"] + "!"})

    peer = Peer(app, trailing=early)
    await asyncio.sleep(0)
    accepted.set()
    await peer.handshake()
    assert (await peer.next_events())[0] == TextMessage(data="early!")


async def test_reading_pauses_while_many_messages_wait() -> None:
    release = asyncio.Event()
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while len(got) < 40:
            got.append(await receive())

    peer = Peer(app)
    await peer.handshake()
    for i in range(40):
        peer.send(TextMessage(data=str(i)))
    assert not peer.io.reading
    release.set()
    await peer.io.wait_apps()
    assert peer.io.reading
    assert [m["text"] for m in got] == [str(i) for i in range(40)]


async def test_access_log_sees_the_stream_as_a_stream() -> None:
    peer = Peer(echo)
    assert isinstance(peer.stream, Stream)
    await peer.handshake()
    peer.io.lose()
    await peer.io.wait_apps()


@pytest.mark.parametrize("kind", ["websocket.accept", "websocket.http.response.start"])
async def test_app_headers_that_would_split_the_response_are_refused(kind: str) -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": kind, "status": 401, "headers": [(b"x-a", b"1\r\nx-injected: 1")]})
        except ASGIProtocolError as exc:
            errors.append(exc)
            raise

    peer = Peer(app)
    assert await peer.handshake() == 500
    assert b"x-injected" not in peer.head
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        # the websockets library and browsers offer client_max_window_bits without a value
        (
            b"permessage-deflate; client_max_window_bits",
            b"permessage-deflate; client_max_window_bits=12; server_max_window_bits=12",
        ),
        # a client that may only use 15 bits is not asked for less; ours is still 12
        (b"permessage-deflate", b"permessage-deflate; server_max_window_bits=12"),
        # a client asking for less than 12 gets it, both ways
        (
            b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            b"permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
        ),
        (
            b"permessage-deflate; server_max_window_bits=15",
            b"permessage-deflate; server_max_window_bits=12",
        ),
    ],
)
async def test_permessage_deflate_windows_are_bounded(offer: bytes, answer: bytes) -> None:
    peer = Peer(echo, extra_headers=[(b"sec-websocket-extensions", offer)])
    await peer.handshake()
    assert peer.response_headers[b"sec-websocket-extensions"] == answer
    text = "compress me, " * 2000
    peer.send(TextMessage(data=text))
    [event] = await peer.next_events()
    assert event == TextMessage(data=text)  # the client inflates what the bounded side made
    assert peer.stream.response_bytes < 1000


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (b"https://chat.example.com", ("https://chat.example.com",), 101),
        (b"http://evil.example", ("https://chat.example.com",), 403),
        (b"http://chat.example.com", ("https://chat.example.com",), 403),  # scheme matters
        (b"https://a.example.com", (".example.com",), 101),
        (b"https://example.com", (".example.com",), 101),
        (b"https://badexample.com", (".example.com",), 403),
        (b"http://localhost:8000", ("localhost:8000",), 101),
        (b"http://localhost:9000", ("localhost:8000",), 403),
        (b"null", ("https://chat.example.com",), 403),
        (b"http://evil.example", ("*",), 101),
        (None, ("https://chat.example.com",), 101),  # not a browser: nothing to defend
        (b"http://evil.example", (), 101),  # no list: no check
    ],
)
async def test_origin_outside_ws_allowed_origins_is_refused_before_the_app(
    origin: bytes | None, allowed: tuple[str, ...], status: int
) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await echo(scope, receive, send)

    peer = Peer(app, ServerConfig(ws_allowed_origins=allowed), origin=origin)
    if status == 403:
        await peer.io.wait_apps()
        assert peer.io.written.startswith(b"HTTP/1.1 403 ")
        assert peer.io.closed and seen == []  # the app never ran
    else:
        assert await peer.handshake() == 101 and len(seen) == 1


async def test_two_origin_headers_are_refused() -> None:
    origins = [(b"origin", b"https://ok.example"), (b"origin", b"http://x")]
    config = ServerConfig(ws_allowed_origins=("https://ok.example",))
    peer = Peer(echo, config, extra_headers=origins)
    assert peer.io.written.startswith(b"HTTP/1.1 403 ") and peer.io.closed


@pytest.mark.parametrize(("origin", "status"), [("https://ok.example", 200), ("http://x", 403)])
async def test_origin_is_checked_for_a_websocket_over_http2(origin: str, status: int) -> None:
    import h2.config
    import h2.connection
    import h2.events

    from towpath.interface.protocol.h2 import H2Connection

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await receive()
        await send({"type": "websocket.accept"})

    io = MemoryIO(app)
    config = ServerConfig(ws_allowed_origins=("https://ok.example",))
    io.attach(H2Connection(io, ServerContext(config)))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    io.feed(client.data_to_send())
    client.receive_data(io.take())  # the server's SETTINGS, which enable extended CONNECT
    stream_id = client.get_next_available_stream_id()
    head = [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
        (":authority", "ok.example"), (":path", "/"), ("sec-websocket-version", "13"),
        ("origin", origin),
    ]  # fmt: skip
    client.send_headers(stream_id, head)
    io.feed(client.data_to_send())
    await io.run_until(lambda: bool(io.written))
    events = client.receive_data(io.take())
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(response.headers)[b":status"] == str(status).encode()
    assert len(seen) == (1 if status == 200 else 0)
