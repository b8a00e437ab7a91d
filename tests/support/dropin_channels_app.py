"""Django Channels driving towpath's layers through its own machinery, run as a script by
tests/layers/test_dropin_peers.py with a Redis URL (Django's settings are per process): its
``get_channel_layer`` and ``TEST_CONFIG``, consumers under ``channels.testing``'s
communicators (async, sync and on the pub/sub layer), and ``channels.worker.Worker`` (what
``manage.py runworker`` runs). Prints one JSON object: item -> what was observed.
"""
# ruff: noqa: E402 - Django must be configured before Channels is imported

import asyncio
import json
import sys
import traceback

import django
from django.conf import settings

URL = sys.argv[1]
settings.configure(
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "towpath.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [URL], "prefix": "live"},
            "TEST_CONFIG": {"hosts": [URL], "prefix": "test", "capacity": 7},
        },
        "pubsub": {
            "BACKEND": "towpath.layers.redis.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [URL], "prefix": "ps"},
        },
    },
)
django.setup()

from channels.consumer import AsyncConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.routing import ChannelNameRouter
from channels.testing import HttpCommunicator, WebsocketCommunicator
from channels.worker import Worker

WAIT = 10


class AsyncRoom(AsyncWebsocketConsumer):
    groups = ["room"]

    async def connect(self):
        await self.accept()

    async def chat_message(self, event):
        await self.send(text_data=event["text"])


class SyncRoom(WebsocketConsumer):
    groups = ["sync-room"]

    def connect(self):
        self.accept()

    def chat_message(self, event):
        self.send(text_data=event["text"])


class PubSubRoom(AsyncRoom):
    channel_layer_alias = "pubsub"
    groups = ["ps-room"]


class Logged(AsyncHttpConsumer):
    async def handle(self, body):
        await self.channel_layer.send(
            "http-log", {"type": "log", "path": self.scope["path"], "channel": self.channel_name}
        )
        await self.send_response(200, b"logged")


class Thumbnails(AsyncConsumer):
    async def thumbnail_make(self, message):
        await self.channel_layer.send(message["reply"], {"type": "made", "n": message["n"]})


async def room(consumer, group, alias="default"):
    """Connect a WebsocketCommunicator, group_send to its group from outside, hear it."""
    layer = get_channel_layer(alias)
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await communicator.connect(timeout=WAIT)
    await layer.group_send(group, {"type": "chat.message", "text": f"hello {group}"})
    heard = await communicator.receive_from(timeout=WAIT)
    await communicator.disconnect(timeout=WAIT)
    return {"connected": connected, "heard": heard}


async def items():
    layer = get_channel_layer()
    yield (
        "get_channel_layer",
        lambda: {
            "default": type(layer).__module__ + "." + type(layer).__qualname__,
            "pubsub": type(get_channel_layer("pubsub")).__qualname__,
            "prefix": layer.prefix,
        },
    )
    test_layer = channel_layers.make_test_backend("default")
    yield (
        "make_test_backend",
        lambda: {
            "class": type(test_layer).__qualname__,
            "prefix": test_layer.prefix,
            "capacity": test_layer.capacity,
        },
    )

    async def async_room():
        result = await room(AsyncRoom, "room")
        result["members_after_disconnect"] = await layer.connection(0).zcard("live:group:room")
        return result

    yield "websocket_async_consumer", async_room

    async def sync_room():
        result = await room(SyncRoom, "sync-room")
        result["members_after_disconnect"] = await layer.connection(0).zcard("live:group:sync-room")
        return result

    yield "websocket_sync_consumer", sync_room
    yield "websocket_pubsub_consumer", lambda: room(PubSubRoom, "ps-room", "pubsub")

    async def http():
        communicator = HttpCommunicator(Logged.as_asgi(), "GET", "/logged/")
        response = await communicator.get_response(timeout=WAIT)
        async with asyncio.timeout(WAIT):
            log = await layer.receive("http-log")
        return {"status": response["status"], "body": response["body"].decode(), "log": log}

    yield "http_consumer", http

    async def worker():
        router = ChannelNameRouter({"thumbnails": Thumbnails.as_asgi()})
        running = asyncio.ensure_future(
            Worker(application=router, channels=["thumbnails"], channel_layer=layer).handle()
        )
        reply = await layer.new_channel("results")
        try:
            for n in range(3):
                await layer.send("thumbnails", {"type": "thumbnail.make", "n": n, "reply": reply})
            async with asyncio.timeout(WAIT):
                return [(await layer.receive(reply))["n"] for _ in range(3)]
        finally:
            running.cancel()

    yield "worker", worker


async def main():
    results = {}
    async for name, item in items():
        try:
            value = item()
            results[name] = await value if asyncio.iscoroutine(value) else value
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    await get_channel_layer().flush()
    for alias in ("default", "pubsub"):
        await get_channel_layer(alias).close()
    print(json.dumps(results))


asyncio.run(main())
