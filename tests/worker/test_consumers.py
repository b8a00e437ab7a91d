"""Consumer classes served in-process by a real server (websockets and httpx as clients), on
the in-memory layer and on a real Redis: the Channels tutorial chat, JSON, HTTP streaming and
long-poll, StopConsumer, groups left on disconnect, failures, and a consumer "mounted" in an
ASGI router of the test's own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.consumers import ChatConsumer
from towpath.consumers import (
    AsyncConsumer,
    AsyncHttpConsumer,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    DenyConnection,
    StopConsumer,
)
from towpath.layers import (
    ChannelLayerNotRegistered,
    InMemoryChannelLayer,
    register_channel_layer,
    unregister_channel_layer,
)
from towpath.routing import Router, route
from towpath.testing.server import running_server
from towpath.testing.services import RedisServer


@pytest.fixture
def memory_layer() -> Iterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    register_channel_layer("default", layer)
    yield layer
    unregister_channel_layer("default")


# -- the Channels tutorial chat consumer (tests/support/consumers.py): only the imports differ --


def chat_router(**initkwargs: Any) -> Router:
    return Router(
        [
            route(
                "websocket.connect",
                ChatConsumer.as_asgi(**initkwargs),
                path=r"^/ws/chat/(?P<room_name>\w+)/$",
            )
        ]
    )


async def chat(url_a: str, url_b: str) -> None:
    async with connect(url_a) as alice, connect(url_b) as bob:
        await alice.send(json.dumps({"message": "hello from alice"}))
        assert json.loads(await alice.recv()) == {"message": "hello from alice"}
        assert json.loads(await bob.recv()) == {"message": "hello from alice"}
        await bob.send(json.dumps({"message": "hi alice"}))
        assert json.loads(await alice.recv()) == {"message": "hi alice"}
        assert json.loads(await bob.recv()) == {"message": "hi alice"}


async def test_chat_in_memory(memory_layer: InMemoryChannelLayer) -> None:
    async with running_server(chat_router()) as server:
        url = server.ws_url + "/ws/chat/lobby/"
        await chat(url, url)


async def test_chat_over_redis_between_two_servers(redis_server: RedisServer) -> None:
    """Each server has its own Redis layer instance (as two processes would); the room's
    group_send crosses between them through Redis."""
    from towpath.layers.redis import RedisChannelLayer

    layers = {alias: RedisChannelLayer(hosts=[redis_server.url]) for alias in ("east", "west")}
    for alias, layer in layers.items():
        register_channel_layer(alias, layer)
    try:
        async with (
            running_server(chat_router(channel_layer_alias="east")) as east,
            running_server(chat_router(channel_layer_alias="west")) as west,
        ):
            await chat(east.ws_url + "/ws/chat/r1/", west.ws_url + "/ws/chat/r1/")
    finally:
        for alias, layer in layers.items():
            unregister_channel_layer(alias)
            await layer.close()


# -- groups, JSON, StopConsumer, failures --------------------------------------------------------


class Announcements(AsyncJsonWebsocketConsumer):
    groups = ["news"]
    left: asyncio.Event

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("stop"):
            raise StopConsumer()
        if content.get("fail"):
            raise RuntimeError("consumer bug")
        await self.channel_layer.group_send("news", {"type": "news.item", "item": content})

    async def news_item(self, event: dict[str, Any]) -> None:
        await self.send_json({"echo": event["item"], "channel": self.channel_name})

    async def disconnect(self, code: int) -> None:
        self.left.set()


async def test_json_groups_joined_on_connect_and_left_on_disconnect(
    memory_layer: InMemoryChannelLayer,
) -> None:
    left = asyncio.Event()
    router = Router([route("websocket.connect", Announcements.as_asgi(left=left))])
    async with running_server(router) as server:
        async with connect(server.ws_url + "/") as ws:
            await ws.send(json.dumps({"n": 1}))
            reply = json.loads(await ws.recv())
            assert reply["echo"] == {"n": 1}
            assert set(memory_layer._groups["news"]) == {reply["channel"]}
        await left.wait()
        assert "news" not in memory_layer._groups


async def test_stop_consumer_ends_the_instance(memory_layer: InMemoryChannelLayer) -> None:
    router = Router([route("websocket.connect", Announcements.as_asgi(left=asyncio.Event()))])
    async with running_server(router) as server, connect(server.ws_url + "/") as ws:
        await ws.send(json.dumps({"stop": True}))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    # StopConsumer skipped websocket_disconnect; the instance left its groups as it ended,
    # before the close (Channels 4 leaves the membership behind until group_expiry)
    assert "news" not in memory_layer._groups


class Broken(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        if body == b"fail":
            raise RuntimeError("consumer bug")
        await self.send_response(200, b"fine", headers={b"content-type": b"text/plain"})


async def test_consumer_exceptions_give_500_and_1011_and_the_server_goes_on(
    memory_layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router(
        [
            route("http.request", Broken),
            route("websocket.connect", Announcements.as_asgi(left=asyncio.Event())),
        ]
    )
    async with running_server(router) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.post("/", content=b"fail")).status_code == 500
            response = await client.post("/", content=b"ok")
            assert (response.status_code, response.text) == (200, "fine")
        async with connect(server.ws_url + "/") as ws:
            await ws.send(json.dumps({"fail": True}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        async with connect(server.ws_url + "/") as ws:
            await ws.send(json.dumps({"n": 2}))
            assert json.loads(await ws.recv())["echo"] == {"n": 2}
    assert "consumer bug" in caplog.text


class Picky(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        if self.scope["subprotocols"] != ["v2"]:
            raise DenyConnection()
        await self.accept("v2", headers=[(b"x-room", b"picky")])


async def test_accept_subprotocol_headers_and_deny(memory_layer: InMemoryChannelLayer) -> None:
    async with running_server(Picky.as_asgi()) as server:
        async with connect(server.ws_url + "/", subprotocols=["v2"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2"
            assert ws.response is not None and ws.response.headers["x-room"] == "picky"
        with pytest.raises(InvalidStatus) as denied:
            async with connect(server.ws_url + "/"):
                pass
        assert denied.value.response.status_code == 403


# -- HTTP: streaming and long-poll ---------------------------------------------------------------


class Stream(AsyncHttpConsumer):
    go_on: asyncio.Event

    async def handle(self, body: bytes) -> None:
        await self.send_headers(headers=[(b"content-type", b"text/plain")])
        await self.send_body(b"first;", more_body=True)
        await self.go_on.wait()
        await self.send_body(b"second;", more_body=True)
        await self.send_body(b"last")


async def test_http_streaming_is_read_incrementally(memory_layer: InMemoryChannelLayer) -> None:
    go_on = asyncio.Event()
    async with (
        running_server(Stream.as_asgi(go_on=go_on)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("GET", "/") as response,
    ):
        chunks: AsyncIterator[bytes] = response.aiter_raw()
        assert await anext(chunks) == b"first;"  # arrived while the consumer still waits
        go_on.set()
        rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"second;last"


class LongPoll(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.channel_layer.group_add("waiters", self.channel_name)
        await self.send_headers(headers=[(b"content-type", b"application/json")])
        await self.send_body(b"", more_body=True)

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_body(json.dumps(event).encode())

    async def disconnect(self) -> None:
        await self.channel_layer.group_discard("waiters", self.channel_name)


async def test_long_poll_finished_by_a_group_event(memory_layer: InMemoryChannelLayer) -> None:
    """The Channels docs' long-poll consumer: handle() leaves the response open, a group_send
    event completes it, then the instance stops and leaves the group."""
    async with (
        running_server(LongPoll.as_asgi()) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("GET", "/") as response,
    ):
        assert response.status_code == 200  # headers arrive with the first (empty) body
        assert len(memory_layer._groups["waiters"]) == 1
        await memory_layer.group_send("waiters", {"type": "chat.message", "text": "news"})
        assert json.loads(await response.aread()) == {"type": "chat.message", "text": "news"}
    assert "waiters" not in memory_layer._groups


# -- the same consumer mounted by someone else's router ------------------------------------------


async def test_consumer_mounted_in_a_plain_asgi_router(memory_layer: InMemoryChannelLayer) -> None:
    """No towpath routing: the consumer app is called by a tiny ASGI router, as Starlette's
    WebSocketRoute or a FastAPI mount would call it."""
    chat_app = ChatConsumer.as_asgi()

    async def tiny_router(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await Router([])(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"].startswith("/rooms/"):
            room = scope["path"].removeprefix("/rooms/")
            scope = {**scope, "url_route": {"args": (), "kwargs": {"room_name": room}}}
            await chat_app(scope, receive, send)
        else:
            await Router([])(scope, receive, send)  # 404 / 403

    async with running_server(tiny_router) as server:
        await chat(server.ws_url + "/rooms/mounted", server.ws_url + "/rooms/mounted")
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/rooms/x")).status_code == 404


# -- no layer configured -------------------------------------------------------------------------


async def test_missing_layer_error_says_how_to_configure_one() -> None:
    unregister_channel_layer("default")
    sent: list[dict[str, Any]] = []
    events = iter([{"type": "websocket.connect"}])

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = Announcements.as_asgi(left=asyncio.Event())
    with pytest.raises(ChannelLayerNotRegistered, match="register_channel_layer.*CHANNEL_LAYERS"):
        await app({"type": "websocket", "path": "/"}, receive, send)
    assert sent == []  # nothing accepted

    class Echo(AsyncConsumer):
        """A consumer without groups runs with no layer at all, as in Channels."""

        async def websocket_connect(self, message: dict[str, Any]) -> None:
            assert not self.channel_layer
            await self.send({"type": "websocket.accept"})
            raise StopConsumer()

    events = iter([{"type": "websocket.connect"}])
    await Echo.as_asgi()({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.accept"}]
