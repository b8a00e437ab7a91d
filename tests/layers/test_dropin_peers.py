"""The peers' own machinery driving towpath's layers, against real redis-server processes.

* Django Channels (in a script of its own: Django's settings are per process,
  tests/support/dropin_channels_app.py): ``get_channel_layer`` and ``TEST_CONFIG`` with towpath's
  BACKEND, Channels' async and sync WebSocket consumers with ``groups`` and an HTTP consumer
  under ``channels.testing``'s communicators, on the queue and pub/sub layers,
  ``channels.worker.Worker`` (what ``manage.py runworker`` runs), and
  ``ChannelsLiveServerTestCase`` (tests/support/dropin_channels_live.py: the app under daphne in a
  child process).
* fast-channels: towpath's layers in its registry, its consumers under
  ``fast_channels.testing``'s communicators, its in-memory layer beside towpath's.

docs/migrating.md (the API tables) names these tests.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import channels.layers
import fast_channels.layers
import fast_channels.testing
import pytest
from fast_channels.consumer.http import AsyncHttpConsumer as FastHttpConsumer
from fast_channels.consumer.websocket import AsyncWebsocketConsumer as FastWebsocketConsumer

from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from towpath.testing.services import (
    REDIS_INSTALL_HINT,
    RedisServer,
    RedisServerFactory,
    find_redis_server,
    require_service,
)

ROOT = Path(__file__).resolve().parents[2]


async def _receive(layer: Any, channel: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = await layer.receive(channel)
        return message


# -- Django Channels driving towpath's layers ----------------------------------------------------

CHANNELS_SCRIPT = ROOT / "tests" / "support" / "dropin_channels_app.py"


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    binary = find_redis_server()
    require_service("redis-server", binary is not None, REDIS_INSTALL_HINT)
    with RedisServerFactory(binary) as factory:
        yield factory()


@pytest.fixture(scope="module")
def channels_run(module_redis: RedisServer) -> dict[str, Any]:
    """Run CHANNELS_SCRIPT once (Django's settings are per process); what it observed."""
    result = subprocess.run(
        [sys.executable, str(CHANNELS_SCRIPT), module_redis.url],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    observed: dict[str, Any] = json.loads(result.stdout)
    return observed


def _item(run: dict[str, Any], name: str) -> Any:
    value = run[name]
    assert not (isinstance(value, dict) and "error" in value), value.get("error")
    return value


@pytest.mark.redis
def test_channels_get_channel_layer_builds_towpaths_layers(channels_run: dict[str, Any]) -> None:
    assert _item(channels_run, "get_channel_layer") == {
        "default": "towpath.layers.redis.core.RedisChannelLayer",
        "pubsub": "RedisPubSubChannelLayer",
        "prefix": "live",
    }


@pytest.mark.redis
def test_channels_test_config_builds_towpaths_layer(channels_run: dict[str, Any]) -> None:
    assert _item(channels_run, "make_test_backend") == {
        "class": "RedisChannelLayer",
        "prefix": "test",
        "capacity": 7,
    }


@pytest.mark.redis
@pytest.mark.parametrize("consumer", ["async", "sync"])
def test_channels_websocket_consumer_groups_through_websocket_communicator(
    channels_run: dict[str, Any], consumer: str
) -> None:
    group = {"async": "room", "sync": "sync-room"}[consumer]
    # joined on connect, heard a group_send from outside, left on disconnect
    assert _item(channels_run, f"websocket_{consumer}_consumer") == {
        "connected": True,
        "heard": f"hello {group}",
        "members_after_disconnect": 0,
    }


@pytest.mark.redis
def test_channels_consumer_on_the_pubsub_layer(channels_run: dict[str, Any]) -> None:
    assert _item(channels_run, "websocket_pubsub_consumer") == {
        "connected": True,
        "heard": "hello ps-room",
    }


@pytest.mark.redis
def test_channels_http_consumer_through_http_communicator(channels_run: dict[str, Any]) -> None:
    observed = _item(channels_run, "http_consumer")
    assert (observed["status"], observed["body"]) == (200, "logged")
    assert observed["log"]["path"] == "/logged/"
    assert observed["log"]["channel"].startswith("specific.") and "!" in observed["log"]["channel"]


@pytest.mark.redis
def test_channels_worker_serves_a_channel_name_router(channels_run: dict[str, Any]) -> None:
    """What ``manage.py runworker thumbnails`` runs: channels.worker.Worker on the layer."""
    assert _item(channels_run, "worker") == [0, 1, 2]


def _daphne_import_error() -> str | None:
    """Why daphne cannot be imported here, if it cannot: pyOpenSSL 22 (the dev lock's, via
    Twisted) fails on import with cryptography 51 (``lib`` has no ``GEN_EMAIL``)."""
    try:
        with warnings.catch_warnings():  # newer pyOpenSSL warns about DSA on import
            warnings.simplefilter("ignore")
            importlib.import_module("daphne.server")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


LIVE_SCRIPT = ROOT / "tests" / "support" / "dropin_channels_live.py"


@pytest.mark.redis
@pytest.mark.slow
def test_channels_live_server_test_case_with_towpaths_layer(
    module_redis: RedisServer, tmp_path: Path
) -> None:
    """ChannelsLiveServerTestCase runs the app under daphne in a child process; a group_send
    from the test process reaches its consumer through towpath's layer."""
    error = _daphne_import_error()
    if error is not None:
        pytest.skip(f"daphne cannot be imported in this environment ({error})")
    result = subprocess.run(
        [sys.executable, str(LIVE_SCRIPT), module_redis.url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["HEARD across processes"]


# -- fast-channels driving towpath's layers ------------------------------------------------------


class FastRoom(FastWebsocketConsumer):
    channel_layer_alias = "towpath-dropin"
    groups = ["room"]

    async def connect(self) -> None:
        await self.accept()

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class FastLogged(FastHttpConsumer):
    channel_layer_alias = "towpath-dropin"

    async def handle(self, body: bytes) -> None:
        log = {"type": "log", "path": self.scope["path"], "channel": self.channel_name}
        await self.channel_layer.send("http-log", log)  # type: ignore[union-attr]
        await self.send_response(200, b"logged")


@pytest.fixture(params=["queue", "pubsub"])
def fast_registered(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[RedisChannelLayer | RedisPubSubChannelLayer]:
    """A towpath layer in fast-channels' own registry, as its README registers a layer."""
    kind = {"queue": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}[request.param]
    layer = kind(hosts=[redis_server.url])
    fast_channels.layers.register_channel_layer("towpath-dropin", layer)  # type: ignore[arg-type]
    yield layer
    fast_channels.layers.unregister_channel_layer("towpath-dropin")


@pytest.mark.redis
async def test_fast_channels_consumer_groups_through_its_communicator(
    fast_registered: RedisChannelLayer | RedisPubSubChannelLayer,
) -> None:
    layer = fast_registered
    try:
        communicator = fast_channels.testing.WebsocketCommunicator(FastRoom.as_asgi(), "/ws")
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected
        await layer.group_send("room", {"type": "chat.message", "text": "hello"})
        assert await communicator.receive_from(timeout=WAIT) == "hello"
        await communicator.disconnect(timeout=WAIT)
        if isinstance(layer, RedisChannelLayer):
            assert await layer.connection(0).zcard("asgi:group:room") == 0
    finally:
        await layer.close()


@pytest.mark.redis
async def test_fast_channels_http_consumer_through_its_communicator(
    fast_registered: RedisChannelLayer | RedisPubSubChannelLayer,
) -> None:
    layer = fast_registered
    try:
        if isinstance(layer, RedisPubSubChannelLayer):
            await layer.subscribe("http-log")  # pub/sub keeps nothing for a later subscriber
        communicator = fast_channels.testing.HttpCommunicator(FastLogged.as_asgi(), "/x")
        await communicator.send_request()  # fast-channels' get_response does not send it
        response = await communicator.get_response(timeout=WAIT)
        assert (response["status"], response["body"]) == (200, b"logged")
        log = await _receive(layer, "http-log")
        assert log["path"] == "/x" and f".{layer.client_prefix}!" in log["channel"]
    finally:
        await layer.close()


@pytest.mark.redis
async def test_fast_channels_registry_holds_towpaths_layer(
    fast_registered: RedisChannelLayer | RedisPubSubChannelLayer,
) -> None:
    layer = fast_registered
    registry = fast_channels.layers.channel_layers
    try:
        assert fast_channels.layers.get_channel_layer("towpath-dropin") is layer
        assert fast_channels.layers.has_layers()
        assert "towpath-dropin" in registry and registry["towpath-dropin"] is layer
        assert "towpath-dropin" in registry.list_aliases()
        own = fast_channels.layers.ChannelLayerRegistry()
        own.register("mine", layer)  # type: ignore[arg-type]
        assert own.get("mine") is layer and len(own) == 1
        # fast-channels checks no types: a towpath layer is not its BaseChannelLayer (nor
        # Channels'), and nothing there asks (a type checker does: cast or ignore)
        assert not isinstance(layer, fast_channels.layers.BaseChannelLayer)
        assert not isinstance(layer, channels.layers.BaseChannelLayer)
        channel = await layer.new_channel()
        await layer.group_add("chat", channel)
        await layer.group_send("chat", {"type": "chat.message", "text": "hi"})
        assert (await _receive(layer, channel))["text"] == "hi"
    finally:
        await layer.close()


async def test_fast_channels_in_memory_layer_and_towpaths() -> None:
    """fast_channels.layers.InMemoryChannelLayer → towpath.layers.InMemoryChannelLayer: the
    same calls, and towpath's serialises (so a message that Redis could not carry fails in
    tests too)."""
    from towpath.layers import InMemoryChannelLayer

    theirs, ours = fast_channels.layers.InMemoryChannelLayer(), InMemoryChannelLayer()
    for layer in (theirs, ours):
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "x", "n": 1})
        assert await _receive(layer, channel) == {"type": "x", "n": 1}
    await theirs.send("c", {"type": "x", "obj": object()})  # kept as is, unserialised
    with pytest.raises(TypeError, match="cannot be serialised"):
        await ours.send("c", {"type": "x", "obj": object()})
