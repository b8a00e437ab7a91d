"""The interface server over real sockets: listeners (TCP, unix, inherited fd, TLS), the
connection limit, slow clients, graceful shutdown, lifespan and the access log.

Tests that need the real HTTP/1.1 protocol (``towpath.interface.protocol.http11``) use it when
it exists; the transport itself is also checked with a tiny protocol of this file's own
(one request per connection, ``connection: close``), so it is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import socket
import ssl
from typing import Any

import pytest

from tests.support.waiting import until
from towpath.interface.config import ServerConfig
from towpath.interface.lifespan import LifespanFailure
from towpath.interface.protocol.base import Connection, ConnectionIO, Message, ServerContext, Stream
from towpath.interface.protocol.scope import http_scope
from towpath.interface.server import Server, address_url, parse_bind
from towpath.testing.server import running_server

HAVE_HTTP11 = importlib.util.find_spec("towpath.interface.protocol.http11") is not None
needs_http11 = pytest.mark.skipif(not HAVE_HTTP11, reason="protocol/http11.py not written yet")


# -- a tiny protocol: enough HTTP/1.0 to drive the transport -----------------------------------


class _TinyStream(Stream):
    def __init__(self, conn: _TinyConnection, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.scope = scope
        self.request_sent = False
        self.gone = False
        self.head = b""
        self.body = bytearray()

    def receive(self) -> Message | None:
        if self.gone:
            return {"type": "http.disconnect"}
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return None

    def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            lines = [f"HTTP/1.1 {self.status} X\r\n".encode()]
            lines += [b"%s: %s\r\n" % pair for pair in message.get("headers", [])]
            self.head = b"".join(lines) + b"connection: close\r\n\r\n"
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.response_bytes = len(self.body)
                self.conn.io.write(self.head + bytes(self.body))
                self.conn.io.close()

    def app_finished(self, error: BaseException | None) -> None:
        log = self.conn.context.access_log
        if log is not None:
            log("http.complete", self)
        if error is not None and not self.head:
            self.conn.io.write(b"HTTP/1.1 500 X\r\ncontent-length: 0\r\n\r\n")
        self.conn.io.close()


class _TinyConnection(Connection):
    def __init__(self, io: ConnectionIO, context: ServerContext) -> None:
        super().__init__(io, context)
        self.buffer = b""
        self.stream: _TinyStream | None = None

    def connection_made(self) -> None:
        self.io.set_timer("header", self.context.config.header_timeout_seconds)

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        self.io.set_timer("header", None)
        head = self.buffer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        method, target, _ = head[0].split(b" ")
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in head[1:])
        ]
        scope = http_scope(
            self.context, self.io, method=method.decode(), target=target,
            headers=headers, http_version="1.1",
        )  # fmt: skip
        self.stream = _TinyStream(self, scope)
        self.io.start_stream(self.stream)

    def connection_lost(self) -> None:
        if self.stream is not None:
            self.stream.gone = True
            self.io.wake(self.stream)

    def timeout(self, name: str) -> None:
        self.io.abort()

    def shutdown(self, websocket_close_code: int = 1001) -> None:
        if self.stream is None:
            self.io.close()


@pytest.fixture
def tiny_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve with the tiny protocol instead of HTTP/1.1."""
    monkeypatch.setattr(
        "towpath.interface.transport.connection_class_for", lambda alpn: _TinyConnection
    )


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await receive()
    body = f"hello {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": body})


async def _raw_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/"
) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


async def _get(host: str, port: int, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    return await _raw_request(reader, writer, path)


# -- config parsing ----------------------------------------------------------------------------


def test_parse_bind_forms() -> None:
    assert parse_bind("127.0.0.1:80") == ("tcp", ("127.0.0.1", 80))
    assert parse_bind("[::1]:8443") == ("tcp", ("::1", 8443))
    assert parse_bind("unix:/run/t.sock") == ("unix", "/run/t.sock")
    assert parse_bind("fd://3") == ("fd", 3)
    for bad in ("nohost", "host:port", "fd://x", "unix:", ":80"):
        with pytest.raises(ValueError, match="bind"):
            parse_bind(bad)
    assert address_url(("::1", 80)) == "http://[::1]:80"
    assert address_url("/tmp/s", tls=True) == "https+unix:///tmp/s"


# -- listeners, with the tiny protocol ---------------------------------------------------------


async def test_tcp_listener_serves_and_reports_the_real_port(tiny_protocol: None) -> None:
    async with running_server(hello) as server:
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
        data = await _get(server.host, server.port, "/a")
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"hello /a")


async def test_unix_socket_listener(tiny_protocol: None, tmp_path: Any) -> None:
    path = str(tmp_path / "t.sock")
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["client"], scope["server"]))
        await hello(scope, receive, send)

    async with running_server(app, unix_socket=path) as server:
        assert path in server.addresses
        reader, writer = await asyncio.open_unix_connection(path)
        data = await _raw_request(reader, writer)
        assert data.endswith(b"hello /")
    assert seen == [(None, None)]


async def test_inherited_fd_listener(tiny_protocol: None) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        async with running_server(hello, fd=sock.fileno()) as server:
            assert ("127.0.0.1", port) in server.addresses
            assert (await _get("127.0.0.1", port)).endswith(b"hello /")
    finally:
        sock.close()


async def test_bad_fd_is_a_clear_error() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="--fd"):
            async with running_server(hello, fd=r):
                pass
    finally:
        os.close(r)
        os.close(w)


async def test_tls_with_alpn(tiny_protocol: None, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    schemes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        schemes.append(scope["scheme"])
        await hello(scope, receive, send)

    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.set_alpn_protocols(["http/1.1"])
    async with running_server(
        app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), http2=False
    ) as server:
        assert server.url.startswith("https://")
        reader, writer = await asyncio.open_connection(
            server.host, server.port, ssl=client_context, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        data = await _raw_request(reader, writer)
        assert data.endswith(b"hello /")
    assert schemes == ["https"]


async def test_tls_offers_h2_by_alpn(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme")
    chosen: list[str | None] = []

    def pick(alpn: str | None) -> type[Connection]:
        chosen.append(alpn)
        return _TinyConnection

    monkeypatch.setattr("towpath.interface.transport.connection_class_for", pick)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    async with running_server(hello, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as s:
        reader, writer = await asyncio.open_connection(s.host, s.port, ssl=client_context)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        await _raw_request(reader, writer)
    assert chosen == ["h2"]


async def test_bad_certificate_is_a_clear_error(tmp_path: Any) -> None:
    (tmp_path / "c.pem").write_text("nope")
    with pytest.raises(ValueError, match="--ssl-certfile"):
        async with running_server(
            hello, ssl_certfile=str(tmp_path / "c.pem"), ssl_keyfile=str(tmp_path / "c.pem")
        ):
            pass


# -- limits and slow clients -------------------------------------------------------------------


async def test_max_connections_answers_503(tiny_protocol: None) -> None:
    async with running_server(hello, max_connections=1) as server:
        held_reader, held_writer = await asyncio.open_connection(server.host, server.port)
        # the server counts the first connection once it has accepted it
        await until(lambda: len(server.server.state.connections) == 1, "the first connection")
        data = await _get(server.host, server.port)
        assert data.startswith(b"HTTP/1.1 503 ")
        assert (await _raw_request(held_reader, held_writer)).endswith(b"hello /")
        # once the first is gone, a new one is served
        await until(lambda: not server.server.state.connections, "the first connection to end")
        assert (await _get(server.host, server.port)).endswith(b"hello /")


async def test_slowloris_is_dropped_while_others_are_served(tiny_protocol: None) -> None:
    async with running_server(hello, header_timeout_seconds=0.3) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            assert (await _get(server.host, server.port)).endswith(b"hello /")
        # the slow one is cut (EOF or reset) within the header timeout
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


# -- graceful shutdown -------------------------------------------------------------------------


async def test_graceful_shutdown_finishes_in_flight_and_refuses_new(tiny_protocol: None) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("http only")
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})

    server = Server(slow, ServerConfig(host="127.0.0.1", port=0, lifespan="off"))
    (address,) = await server.start()
    assert isinstance(address, tuple)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    idle_reader, idle_writer = await asyncio.open_connection(*address)
    shutting = asyncio.create_task(server.shutdown())
    # the idle connection is closed; a new connection is refused
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    idle_writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)
    assert not shutting.done()
    release.set()
    assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"done")
    writer.close()
    await asyncio.wait_for(shutting, 5)


async def test_graceful_timeout_cancels_stuck_apps(tiny_protocol: None) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = Server(
        stuck,
        ServerConfig(host="127.0.0.1", port=0, lifespan="off", graceful_timeout_seconds=0.2),
    )
    (address,) = await server.start()
    assert isinstance(address, tuple)
    _, writer = await asyncio.open_connection(*address)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(server.shutdown(), 5)
    assert cancelled.is_set()
    assert not server.state.connections and not server.state.tasks
    writer.close()


# -- lifespan ----------------------------------------------------------------------------------


def _lifespan_app(events: list[str], *, fail: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            if fail is not None:
                await send({"type": "lifespan.startup.failed", "message": fail})
                return
            scope["state"]["db"] = "connected"
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        events.append(f"request state={scope.get('state')}")
        await hello(scope, receive, send)

    return app


async def test_lifespan_startup_state_and_shutdown(tiny_protocol: None) -> None:
    events: list[str] = []
    async with running_server(_lifespan_app(events), lifespan="on") as server:
        assert events == ["startup"]
        await _get(server.host, server.port)
    assert events == ["startup", "request state={'db': 'connected'}", "shutdown"]


async def test_lifespan_startup_failure_never_listens() -> None:
    server = Server(_lifespan_app([], fail="no database"), ServerConfig(port=0))
    with pytest.raises(LifespanFailure, match="no database"):
        await server.start()
    assert server.addresses == []


async def test_lifespan_auto_tolerates_an_app_without_it(tiny_protocol: None) -> None:
    async with running_server(hello, lifespan="auto") as server:
        assert server.server.context.lifespan_state is None
        assert (await _get(server.host, server.port)).endswith(b"hello /")


async def test_lifespan_on_requires_it() -> None:
    with pytest.raises(LifespanFailure, match="http only"):
        async with running_server(hello, lifespan="on"):
            pass


# -- access log --------------------------------------------------------------------------------


async def test_access_log_rows(tiny_protocol: None, tmp_path: Any) -> None:
    log = tmp_path / "access.log"
    async with running_server(hello, access_log=str(log)) as server:
        await _get(server.host, server.port, "/x?y=1")
    line = log.read_text()
    assert line.startswith("127.0.0.1 - - [")
    assert line.rstrip().endswith('] "GET /x" 200 8')


def test_access_log_websocket_rows() -> None:
    from towpath.interface.accesslog import AccessLogWriter

    out = io.StringIO()
    writer = AccessLogWriter(out)

    class _S(Stream):
        scope = {"type": "websocket", "client": ("10.0.0.1", 5), "path": "/chat"}

        def receive(self) -> Message | None:
            return None

        def send(self, message: Message) -> None:
            return None

        def app_finished(self, error: BaseException | None) -> None:
            return None

    for action in (
        "websocket.connecting",
        "websocket.connected",
        "websocket.rejected",
        "websocket.disconnected",
    ):
        writer(action, _S())
    rows = out.getvalue().splitlines()
    assert [row.split('"')[1] for row in rows] == [
        "WSCONNECTING /chat",
        "WSCONNECT /chat",
        "WSREJECT /chat",
        "WSDISCONNECT /chat",
    ]
    assert all(row.startswith("10.0.0.1 - - [") and row.endswith('" - -') for row in rows)


# -- with the real protocols -------------------------------------------------------------------

HAVE_WEBSOCKET = importlib.util.find_spec("towpath.interface.protocol.websocket") is not None
needs_websocket = pytest.mark.skipif(
    not (HAVE_HTTP11 and HAVE_WEBSOCKET), reason="protocol/websocket.py not written yet"
)


@needs_http11
async def test_keep_alive_across_requests_with_httpx() -> None:
    httpx = pytest.importorskip("httpx")
    peers: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        peers.append(scope["client"])
        await hello(scope, receive, send)

    async with running_server(app, lifespan="off") as server:
        async with httpx.AsyncClient() as client:
            for path in ("/1", "/2", "/3"):
                response = await client.get(server.url + path)
                assert response.text == f"hello {path}"
        assert len(server.server.state.connections) <= 1
    assert len(set(peers)) == 1  # one connection served all three


@needs_http11
async def test_max_connections_503_with_http11() -> None:
    httpx = pytest.importorskip("httpx")
    async with (
        running_server(hello, max_connections=1, lifespan="off") as server,
        httpx.AsyncClient() as first,
        httpx.AsyncClient() as second,
    ):
        assert (await first.get(server.url + "/")).status_code == 200  # kept alive
        response = await second.get(server.url + "/")
        assert response.status_code == 503


@needs_http11
async def test_slowloris_with_http11() -> None:
    async with running_server(hello, header_timeout_seconds=0.3, lifespan="off") as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        for _ in range(3):
            reader2, writer2 = await asyncio.open_connection(server.host, server.port)
            writer2.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert (await asyncio.wait_for(reader2.read(), 5)).endswith(b"hello /")
            writer2.close()
        with contextlib.suppress(ConnectionResetError):
            rest = await asyncio.wait_for(reader.read(), 5)
            assert rest == b"" or rest.startswith(b"HTTP/1.1 408")
        writer.close()


@needs_websocket
async def test_graceful_shutdown_closes_websockets_1001_and_finishes_http() -> None:
    websockets = pytest.importorskip("websockets.asyncio.client")
    accepted = asyncio.Event()
    http_started = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            accepted.set()
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        await receive()
        http_started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"finished"})

    server = Server(app, ServerConfig(host="127.0.0.1", port=0, lifespan="off"))
    (address,) = await server.start()
    assert isinstance(address, tuple)
    host, port = address
    async with websockets.connect(f"ws://{host}:{port}/ws") as ws:
        await asyncio.wait_for(accepted.wait(), 5)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(http_started.wait(), 5)
        shutting = asyncio.create_task(server.shutdown())
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1001
        assert not shutting.done()
        release.set()
        response = await asyncio.wait_for(reader.read(), 5)
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"finished")
        writer.close()
        await asyncio.wait_for(shutting, 5)


@needs_websocket
async def test_access_log_websocket_rows_from_a_real_socket(tmp_path: Any) -> None:
    websockets = pytest.importorskip("websockets.asyncio.client")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("websocket only")
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text")})
        await receive()

    log = tmp_path / "access.log"
    async with running_server(app, access_log=str(log)) as server:  # noqa: SIM117
        async with websockets.connect(server.ws_url + "/chat") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    words = [line.split('"')[1] for line in log.read_text().splitlines()]
    assert words == ["WSCONNECTING /chat", "WSCONNECT /chat", "WSDISCONNECT /chat"]
