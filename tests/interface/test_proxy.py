"""Trusted proxy headers (``towpath/interface/proxy.py``): X-Forwarded-For walked from the right
over trusted hops only, an untrusted peer's headers ignored, CIDR and ``*``, RFC 7239
``Forwarded``, the forwarded proto as the scope's scheme — directly, through ``http_scope`` /
``websocket_scope``, and through a running server with curl."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from typing import Any

import pytest

from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import ServerContext
from towpath.interface.protocol.scope import http_scope, websocket_scope
from towpath.interface.proxy import TrustedProxies, forwarded_client, trusted_proxies
from towpath.testing.memory_io import MemoryIO
from towpath.testing.server import running_server

PEER = ("127.0.0.1", 50000)


def _client(
    headers: list[tuple[bytes, bytes]],
    peer: tuple[str, int] | None = PEER,
    trusted: tuple[str, ...] = ("127.0.0.1",),
) -> tuple[tuple[str, int] | None, str | None]:
    return forwarded_client(headers, peer, trusted_proxies(trusted))


def test_xff_rightmost_untrusted_hop_is_the_client() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.0.0.2")]
    # the client claims 6.6.6.6; our proxies are 127.0.0.1 and 10.0.0.0/8; 1.2.3.4 connected
    # to 10.0.0.2, so 1.2.3.4 is the client as far as anyone trusted can tell
    assert _client(headers, trusted=("127.0.0.1", "10.0.0.0/8")) == (("1.2.3.4", 0), None)
    # with only the direct peer trusted, the last hop is the client
    assert _client(headers) == (("10.0.0.2", 0), None)


def test_untrusted_peer_headers_are_ignored() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    peer = ("203.0.113.9", 4000)
    assert _client(headers, peer=peer) == (peer, None)


def test_star_trusts_every_hop_and_takes_the_leftmost() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2")]
    assert _client(headers, peer=("9.9.9.9", 1), trusted=("*",)) == (("1.1.1.1", 0), None)


def test_cidr_and_ipv6() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "fd00::/8", "::1"])
    assert "10.1.2.3" in proxies and "fd00::5" in proxies and "::1" in proxies
    assert "11.0.0.1" not in proxies and "fe80::1" not in proxies and "junk" not in proxies
    headers = [(b"x-forwarded-for", b"2001:db8::7, fd00::5")]
    got = _client(headers, peer=("::1", 1), trusted=("::1", "fd00::/8"))
    assert got == (("2001:db8::7", 0), None)
    with pytest.raises(ValueError, match="--forwarded-allow-ips"):
        TrustedProxies(["10.0.0.0/99"])


def test_ports_in_hops_are_dropped_and_multiple_headers_join() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4:5555"), (b"x-forwarded-for", b"127.0.0.1")]
    assert _client(headers) == (("1.2.3.4", 0), None)


def test_proto_sets_the_scheme() -> None:
    assert _client([(b"x-forwarded-proto", b"HTTPS")]) == (PEER, "https")
    assert _client([(b"x-forwarded-proto", b"wss")]) == (PEER, "https")
    assert _client([(b"x-forwarded-proto", b"gopher")]) == (PEER, None)


def test_forwarded_header_when_there_is_no_xff() -> None:
    headers = [(b"forwarded", b'for="[2001:db8::1]:4711";proto=https, for=10.0.0.3')]
    got = _client(headers, trusted=("127.0.0.1", "10.0.0.0/8"))
    assert got == (("2001:db8::1", 0), "https")
    both = [(b"forwarded", b"for=5.5.5.5"), (b"x-forwarded-for", b"7.7.7.7")]
    assert _client(both) == (("7.7.7.7", 0), None)


def test_unix_socket_peer_is_a_trusted_local_proxy() -> None:
    assert _client([(b"x-forwarded-for", b"8.8.8.8")], peer=None) == (("8.8.8.8", 0), None)


def _scope_io(**config: Any) -> tuple[ServerContext, MemoryIO]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    return ServerContext(ServerConfig(**config)), MemoryIO(app, client=PEER)


def test_through_http_scope() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    context, io = _scope_io(proxy_headers=True)
    scope = http_scope(context, io, method="GET", target=b"/", headers=headers, http_version="1.1")
    assert scope["client"] == ("1.2.3.4", 0) and scope["scheme"] == "https"
    context, io = _scope_io(proxy_headers=False)
    scope = http_scope(context, io, method="GET", target=b"/", headers=headers, http_version="1.1")
    assert scope["client"] == PEER and scope["scheme"] == "http"
    context, io = _scope_io(proxy_headers=True, forwarded_allow_ips=("10.0.0.1",))
    scope = http_scope(context, io, method="GET", target=b"/", headers=headers, http_version="1.1")
    assert scope["client"] == PEER and scope["scheme"] == "http"


def test_through_websocket_scope() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    context, io = _scope_io(proxy_headers=True)
    scope = websocket_scope(
        context, io, target=b"/ws", headers=headers, http_version="1.1", subprotocols=[]
    )
    assert scope["client"] == ("1.2.3.4", 0) and scope["scheme"] == "wss"


needs_server = pytest.mark.skipif(
    shutil.which("curl") is None
    or importlib.util.find_spec("towpath.interface.protocol.http11") is None,
    reason="needs curl and protocol/http11.py",
)


async def _echo_client(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await receive()
    body = json.dumps({"client": scope["client"], "scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def _curl(url: str, *headers: str) -> Any:
    args = ["curl", "-s", "--max-time", "10"]
    for header in headers:
        args += ["-H", header]
    process = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err
    return json.loads(out)


@needs_server
async def test_through_a_running_server_with_curl() -> None:
    spoof = ("X-Forwarded-For: 6.6.6.6, 1.2.3.4", "X-Forwarded-Proto: https")
    async with running_server(_echo_client, proxy_headers=True) as server:
        seen = await _curl(server.url + "/", *spoof)
        assert seen == {"client": ["1.2.3.4", 0], "scheme": "https"}
    async with running_server(
        _echo_client, proxy_headers=True, forwarded_allow_ips=("10.0.0.0/8",)
    ) as server:
        seen = await _curl(server.url + "/", *spoof)
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"
    async with running_server(_echo_client) as server:
        seen = await _curl(server.url + "/", *spoof)
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"


@pytest.mark.parametrize(
    "value",
    [
        b"evil<script>",
        b"example.com",
        b"1.2.3.4.5",
        b"999.1.1.1",
        b"unknown",
        b"_hidden",
        b"' or 1",
    ],
)
def test_an_xff_hop_that_is_no_ip_address_keeps_the_peer(value: bytes) -> None:
    # the rightmost hop is junk: the walk stops there and the peer's own address stays
    assert _client([(b"x-forwarded-for", value)]) == (PEER, None)
    # junk behind a real address (the client prepended it): the address is the client
    assert _client([(b"x-forwarded-for", value + b", 203.0.113.7")]) == (("203.0.113.7", 0), None)
    # junk left of trusted hops under '*': no address to believe, the peer stays
    assert _client([(b"x-forwarded-for", value + b", 10.0.0.1")], trusted=("*",)) == (PEER, None)


def test_forwarded_for_that_is_no_ip_address_keeps_the_peer() -> None:
    assert _client([(b"forwarded", b'for="evil<x>";proto=https')]) == (PEER, "https")
    assert _client([(b"forwarded", b'for="[2001:db8::1]:4711"')]) == (("2001:db8::1", 0), None)


def test_an_xff_address_is_normalised() -> None:
    assert _client([(b"x-forwarded-for", b" 2001:DB8:0::1 ")]) == (("2001:db8::1", 0), None)


def test_x_forwarded_proto_other_than_http_or_https_is_ignored() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"javascript")]
    assert _client(headers) == (("1.2.3.4", 0), None)
