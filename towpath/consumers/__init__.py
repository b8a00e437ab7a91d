"""Consumers: the code a worker (or an in-process ``Router``) runs for a message.

* Consumer classes, as in Channels 4 and fast-channels: ``AsyncConsumer``,
  ``AsyncWebsocketConsumer``, ``AsyncJsonWebsocketConsumer``, ``AsyncHttpConsumer``. Each
  ``as_asgi()`` is an ASGI 3 app, served in-process or hosted in a worker alike.
* Message consumers, plain ``async def consumer(message, **kwargs)`` functions, answering
  with ``reply()`` / ``reply_events()``.

``OriginValidator(app, ["https://example.com"])`` refuses WebSocket handshakes from other
origins (Channels' ``OriginValidator``).

Exceptions: ``StopConsumer`` (a handler ends its instance), ``AcceptConnection`` /
``DenyConnection`` (raised in ``connect()``); a missing layer is
``towpath.layers.ChannelLayerNotRegistered`` with the way to configure one.
"""

from towpath.consumers.base import (
    AcceptConnection,
    AsyncConsumer,
    DenyConnection,
    StopConsumer,
    get_handler_name,
)
from towpath.consumers.http import AsyncHttpConsumer
from towpath.consumers.messages import current_layer, reply, reply_events
from towpath.consumers.security import OriginValidator
from towpath.consumers.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

__all__ = [
    "AcceptConnection",
    "AsyncConsumer",
    "AsyncHttpConsumer",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "DenyConnection",
    "OriginValidator",
    "StopConsumer",
    "current_layer",
    "get_handler_name",
    "reply",
    "reply_events",
]
