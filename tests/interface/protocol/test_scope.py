"""ASGI scopes as every protocol builds them: path decoding, root_path, query string, lifespan
state copies, WebSocket schemes, and proxy headers applied only for trusted peers."""

from __future__ import annotations

from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import ServerContext
from towpath.interface.protocol.scope import http_scope, websocket_scope
from towpath.testing.memory_io import MemoryIO


async def _app(scope: object, receive: object, send: object) -> None:  # never run
    raise AssertionError


def test_http_scope_decodes_the_path_and_keeps_the_raw_bytes() -> None:
    context = ServerContext(ServerConfig(root_path="/api"), lifespan_state={"db": 1})
    io = MemoryIO(_app)
    scope = http_scope(
        context,
        io,
        method="GET",
        target=b"/caf%C3%A9/x?q=1&r=%20",
        headers=[(b"host", b"example.com")],
        http_version="1.1",
    )
    assert scope["type"] == "http"
    assert scope["path"] == "/api/café/x"
    assert scope["raw_path"] == b"/api/caf%C3%A9/x"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["scheme"] == "http"
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["asgi"]["version"] == "3.0"
    # each scope gets its own copy of the lifespan state
    scope["state"]["db"] = 2
    assert context.lifespan_state == {"db": 1}


def test_websocket_scope_maps_tls_and_forwarded_proto_to_wss() -> None:
    context = ServerContext(ServerConfig())
    scope = websocket_scope(
        context,
        MemoryIO(_app, tls=True),
        target=b"/ws",
        headers=[],
        http_version="1.1",
        subprotocols=["chat", "v2"],
    )
    assert scope["scheme"] == "wss"
    assert scope["subprotocols"] == ["chat", "v2"]
    assert "websocket.http.response" in scope["extensions"]

    proxied = ServerContext(ServerConfig(proxy_headers=True))
    scope = websocket_scope(
        proxied,
        MemoryIO(_app),
        target=b"/ws",
        headers=[(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.9")],
        http_version="1.1",
        subprotocols=[],
    )
    assert scope["scheme"] == "wss"
    assert scope["client"] == ("203.0.113.9", 0)


def test_proxy_headers_from_an_untrusted_peer_are_ignored() -> None:
    context = ServerContext(ServerConfig(proxy_headers=True))
    io = MemoryIO(_app, client=("198.51.100.7", 4000))
    scope = http_scope(
        context,
        io,
        method="GET",
        target=b"/",
        headers=[(b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-proto", b"https")],
        http_version="1.1",
    )
    assert scope["client"] == ("198.51.100.7", 4000)
    assert scope["scheme"] == "http"


def test_forwarded_for_is_walked_from_the_right_over_trusted_hops() -> None:
    config = ServerConfig(proxy_headers=True, forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8"))
    scope = http_scope(
        ServerContext(config),
        MemoryIO(_app),
        method="GET",
        target=b"/",
        # the client claims to be 1.1.1.1; the first untrusted hop from the right is the truth
        headers=[(b"x-forwarded-for", b"1.1.1.1, 203.0.113.5, 10.1.2.3")],
        http_version="1.1",
    )
    assert scope["client"] == ("203.0.113.5", 0)
