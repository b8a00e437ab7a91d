"""WebSocket against a real server: the ``websockets`` library as the client."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from towpath.testing.server import running_server


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Echo on ``/echo``; other paths exercise closing, denial and subprotocols."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no entry"})
        return
    if path == "/forbid":
        await send({"type": "websocket.close"})
        return
    subprotocol = scope["subprotocols"][-1] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    if path == "/close":
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        await receive()
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4001})
            continue
        await send(
            {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
        )


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_echo_text_and_binary(compression: str | None) -> None:
    async with running_server(app) as server:
        async with connect(server.ws_url + "/echo", compression=compression) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xff" * 5000)
            assert await ws.recv() == b"\x00\xff" * 5000
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            await asyncio.wait_for(await ws.ping(), 5)
        assert ws.close_code == 1000


async def test_subprotocol_is_negotiated() -> None:
    async with (
        running_server(app) as server,
        connect(server.ws_url + "/echo", subprotocols=["one", "two"]) as ws,
    ):
        assert ws.subprotocol == "two"


async def test_close_codes_seen_by_the_client() -> None:
    async with running_server(app) as server:
        async with connect(server.ws_url + "/close") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4000 and ws.close_reason == "bye"

        async with connect(server.ws_url + "/echo") as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4001


async def test_message_too_big_is_1009() -> None:
    async with running_server(app, max_websocket_message_bytes=1024) as server:
        async with connect(server.ws_url + "/echo", compression=None) as ws:
            await ws.send(b"x" * 1024)
            assert await ws.recv() == b"x" * 1024
            await ws.send(b"x" * 1025)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009


async def test_denial_and_close_before_accept_are_http_statuses() -> None:
    async with running_server(app) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.ws_url + "/deny"):
                pass
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"no entry"
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.ws_url + "/forbid"):
                pass
        assert info.value.response.status_code == 403


async def test_many_concurrent_clients() -> None:
    async with running_server(app) as server:

        async def client(number: int) -> None:
            async with connect(server.ws_url + "/echo") as ws:
                for round_ in range(10):
                    await ws.send(f"{number}:{round_}")
                    assert await ws.recv() == f"{number}:{round_}"

        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(100))), 30)


async def test_shutdown_closes_with_1001() -> None:
    async with running_server(app) as server:
        ws = await connect(server.ws_url + "/echo")
        await ws.send("hi")
        assert await ws.recv() == "hi"
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1001


async def test_wss_over_tls(tmp_path: Any) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    schemes: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            schemes.append(scope["scheme"])
        await app(scope, receive, send)

    async with (
        running_server(recording, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as server,
        connect(server.ws_url + "/echo", ssl=client_context, server_hostname="localhost") as ws,
    ):
        assert server.ws_url.startswith("wss://")
        await ws.send("secret")
        assert await ws.recv() == "secret"
    assert schemes == ["wss"]


async def test_access_log_has_the_websocket_rows(tmp_path: Any) -> None:
    log = tmp_path / "access.log"
    async with running_server(app, access_log=str(log)) as server:
        async with connect(server.ws_url + "/echo") as ws:
            await ws.send("x")
            await ws.recv()
        with pytest.raises(InvalidStatus):
            async with connect(server.ws_url + "/forbid"):
                pass
    rows = log.read_text().splitlines()
    words = [row.split('"')[1].split()[0] for row in rows]
    assert words == ["WSCONNECTING", "WSCONNECT", "WSDISCONNECT", "WSCONNECTING", "WSREJECT"]
