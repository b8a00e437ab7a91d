"""One consumer class, two deployment models: the Channels-style chat consumer mounted in a
Starlette app (as FastAPI and fast-channels users mount it), served in-process by towpath, with
its path parameter seen as Channels' ``url_route``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect

from tests.support.consumers import ChatConsumer
from towpath.layers import InMemoryChannelLayer, register_channel_layer
from towpath.layers.registry import unregister_channel_layer
from towpath.testing.server import running_server


@pytest.fixture
def memory_layer() -> Iterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    register_channel_layer("default", layer)
    yield layer
    unregister_channel_layer("default")


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("starlette here")


def app() -> Any:
    return Starlette(
        routes=[
            Route("/", homepage),
            WebSocketRoute("/ws/chat/{room_name}/", ChatConsumer.as_asgi()),
        ]
    )


async def test_a_channels_consumer_mounted_in_starlette_chats_through_groups(
    memory_layer: InMemoryChannelLayer,
) -> None:
    async with running_server(app()) as server:
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/")).text == "starlette here"
        url = server.ws_url + "/ws/chat/lobby/"
        async with connect(url) as alice, connect(url) as bob:
            await alice.send(json.dumps({"message": "hi from starlette"}))
            assert json.loads(await bob.recv()) == {"message": "hi from starlette"}
            assert json.loads(await alice.recv()) == {"message": "hi from starlette"}
        async with connect(server.ws_url + "/ws/chat/other/") as carol:
            await carol.send(json.dumps({"message": "only me"}))
            assert json.loads(await carol.recv()) == {"message": "only me"}
