"""The chat that ``python -m bench restarts`` redeploys, for towpath and for Channels 4.

Both behave the same way: every WebSocket client joins the group ``chat``; each text message
a client sends goes to the whole group and every member gets it back as ``"<text> via <TAG>"``
(``TAG``: the ``RESTARTS_TAG`` environment variable, so a run can tell which process
answered).

* ``routes``: towpath routing for ``towpath runworker`` (``ChatConsumer``, towpath's
  ``AsyncWebsocketConsumer``).
* ``bench.restarts_app:channels_application``: the same chat as a Django Channels 4 ASGI
  application (``channels.generic.websocket.AsyncWebsocketConsumer`` over
  ``channels_redis``), for daphne and uvicorn. Django and Channels are imported only when
  that attribute is asked for, so a towpath worker never loads them. The Redis URL comes from
  ``RESTARTS_REDIS_URL``.
"""

from __future__ import annotations

import os
from typing import Any

from towpath.consumers import AsyncWebsocketConsumer
from towpath.routing import route

__all__ = [
    "ChatConsumer",
    "configure_django",
    "routes",
]  # and channels_application, built on first use

TAG = os.environ.get("RESTARTS_TAG", "w")
GROUP = "chat"


class ChatConsumer(AsyncWebsocketConsumer):
    """towpath: the group chat (as ``tests/support/workerapp.py``'s)."""

    groups = [GROUP]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(GROUP, {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=f"{event['text']} via {TAG}")


routes = [route("websocket.connect", ChatConsumer, path=r"^/chat/$")]


def configure_django(backend: str, redis_url: str) -> None:
    """Django configured in code (once per process) for a Channels 4 app whose channel layer
    is ``backend`` (channels_redis' core or Pub/Sub layer) on ``redis_url``."""
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench-channels",
            ALLOWED_HOSTS=["*"],
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url]}}},
        )
        django.setup()


def _channels_application() -> Any:
    """The Channels 4 chat: Django configured in code, channels_redis on RESTARTS_REDIS_URL."""
    configure_django("channels_redis.core.RedisChannelLayer", os.environ["RESTARTS_REDIS_URL"])
    from channels.generic.websocket import AsyncWebsocketConsumer as ChannelsConsumer  # type: ignore[import-untyped]
    from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-untyped]
    from django.urls import path  # type: ignore[import-untyped]

    class ChannelsChatConsumer(ChannelsConsumer):  # type: ignore[misc]
        groups = [GROUP]

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.channel_layer.group_send(GROUP, {"type": "chat.message", "text": text_data})

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=f"{event['text']} via {TAG}")

    return ProtocolTypeRouter(
        {"websocket": URLRouter([path("chat/", ChannelsChatConsumer.as_asgi())])}
    )


def __getattr__(name: str) -> Any:
    if name == "channels_application":
        application = _channels_application()
        globals()[name] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
