"""The applications ``python -m bench fanout`` fans events out through, towpath's and Channels 4's.

Every WebSocket client of ``/fanout/`` joins the group ``fanout``; once it is a member it is
sent one text frame ``"ready <member>"`` (``<member>``: the channel name that joined, so the
bench can count the memberships a client left behind in Redis). The publisher
(``bench/fanout_load.py``) then sends group events; every member forwards each event's ``text``
to its client unchanged.

* ``worker_routes``: towpath, *consumers in workers* -- an ``AsyncWebsocketConsumer`` in
  ``towpath runworker`` joins the group with its own channel and forwards each ``fanout.event``
  with ``self.send`` (the Channels way).
* ``member_routes``: towpath, *reply channels as members* -- a message consumer accepts the
  connection and adds its **reply channel** to the group (docs/protocol.md: anyone may send to a
  reply channel); the publisher's ``group_send`` of ``websocket.send`` events goes straight to
  the interface servers, no worker in the path. The ``websocket.disconnect`` route leaves the
  group.
* ``bench.fanout_app:channels_application``: the *consumers in workers* app as a Django
  Channels 4 application, for uvicorn and daphne; the layer is channels_redis' core layer, or
  its Pub/Sub layer when ``FANOUT_LAYER=pubsub``, on ``FANOUT_REDIS_URL``. Django and Channels
  are imported only when that attribute is asked for, so a towpath worker never loads them.
"""

from __future__ import annotations

import os
from typing import Any

from towpath.consumers import AsyncWebsocketConsumer, reply_events
from towpath.layers import get_channel_layer
from towpath.routing import route

__all__ = ["GROUP", "PATH", "FanoutConsumer", "member_routes", "worker_routes"]
# and channels_application, built on first use

GROUP = "fanout"
PATH = "/fanout/"
EVENT = "fanout.event"  # the group event of the consumers-in-workers apps: {"text": ...}


class FanoutConsumer(AsyncWebsocketConsumer):
    """towpath, consumers in workers: joins ``fanout`` (``groups``), forwards every event."""

    groups = [GROUP]

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"ready {self.channel_name}")

    async def fanout_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


async def member_connect(message: dict[str, Any]) -> None:
    """towpath, reply channels as members: accept, join with the reply channel, say ready."""
    reply_channel: str = message["reply_channel"]
    await reply_events(message, {"type": "websocket.accept"})
    await get_channel_layer().group_add(GROUP, reply_channel)
    await reply_events(message, {"type": "websocket.send", "text": f"ready {reply_channel}"})


async def member_disconnect(message: dict[str, Any]) -> None:
    await get_channel_layer().group_discard(GROUP, message["reply_channel"])


worker_routes = [route("websocket.connect", FanoutConsumer, path=rf"^{PATH}$")]
member_routes = [
    route("websocket.connect", member_connect, path=rf"^{PATH}$"),
    route("websocket.disconnect", member_disconnect),
]


def _channels_application() -> Any:
    """The Channels 4 app: Django configured in code, channels_redis on FANOUT_REDIS_URL."""
    from bench.restarts_app import configure_django

    backend = {
        "core": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }[os.environ.get("FANOUT_LAYER", "core")]
    configure_django(backend, os.environ["FANOUT_REDIS_URL"])
    from channels.generic.websocket import AsyncWebsocketConsumer as ChannelsConsumer  # type: ignore[import-untyped]
    from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-untyped]
    from django.urls import path  # type: ignore[import-untyped]

    class ChannelsFanoutConsumer(ChannelsConsumer):  # type: ignore[misc]
        groups = [GROUP]

        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=f"ready {self.channel_name}")

        async def fanout_event(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    return ProtocolTypeRouter(
        {"websocket": URLRouter([path(PATH.strip("/") + "/", ChannelsFanoutConsumer.as_asgi())])}
    )


def __getattr__(name: str) -> Any:
    if name == "channels_application":
        application = _channels_application()
        globals()[name] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
