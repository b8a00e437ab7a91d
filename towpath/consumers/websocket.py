"""WebSocket consumers with Channels 4's and fast-channels' names and behaviour.

``groups`` are joined in ``websocket_connect`` before ``connect()`` runs and left in
``websocket_disconnect`` before ``disconnect(code)``, exactly as Channels 4 does (an instance
that ends without that handler, by an exception above all, leaves them as it ends:
``AsyncConsumer``); a consumer
with ``groups`` and no configured layer fails on connect with an error saying how to add one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from towpath.consumers.base import AcceptConnection, AsyncConsumer, DenyConnection, StopConsumer

__all__ = ["AsyncJsonWebsocketConsumer", "AsyncWebsocketConsumer"]


class AsyncWebsocketConsumer(AsyncConsumer):
    """Base WebSocket consumer: ``connect``, ``receive``, ``disconnect``, ``send``."""

    groups: list[str] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups is None:
            self.groups = []

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Join ``groups``, then call ``connect()``."""
        for group in self.groups or ():
            await self.channel_layer.group_add(group, self.channel_name)
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """Called on the handshake; accepts by default."""
        await self.accept()

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Accept the WebSocket, optionally choosing a ``subprotocol`` and adding headers."""
        message: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = list(headers)
        await super().send(message)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Decode a frame into ``receive(text_data=...)`` or ``receive(bytes_data=...)``."""
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message["bytes"])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each message from the client."""

    async def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Send text or bytes to the client; ``close=True`` (or a close code) closes after."""
        if text_data is not None:
            await super().send({"type": "websocket.send", "text": text_data})
        elif bytes_data is not None:
            await super().send({"type": "websocket.send", "bytes": bytes_data})
        else:
            raise ValueError("send() needs text_data or bytes_data; both were None")
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close from the server side; before ``accept()`` this rejects (HTTP 403)."""
        message: dict[str, Any] = {"type": "websocket.close"}
        if code is not None and code is not True:
            message["code"] = code
        if reason:
            message["reason"] = reason
        await super().send(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave ``groups``, call ``disconnect(code)`` and stop the instance."""
        for group in self.groups or ():
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_left = True
        await self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called once when the WebSocket has closed, whoever closed it."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """A WebSocket consumer speaking JSON text frames: ``receive_json``, ``send_json``."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data:
            await self.receive_json(await self.decode_json(text_data), **kwargs)
        else:
            raise ValueError("No text section for incoming WebSocket frame (JSON consumers "
                             "take text frames only)")  # fmt: skip

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message."""

    async def send_json(self, content: Any, close: bool = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        await super().send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
