"""Consumers shared by the consumer tests and the docs snippets: the Channels tutorial chat."""

from __future__ import annotations

import json
from typing import Any

from towpath.consumers import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """The Channels tutorial's chat: joins ``chat_<room_name>``, relays each message to it."""

    async def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        message = json.loads(text_data)["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))
