"""The chat room's WebSocket consumer: every message goes to everyone in the room.

A towpath consumer (the Channels 4 class and method names); it runs in the same workers as the
Flask app and reaches the other members through the channel layer's ``lobby`` group, whichever
worker or server process holds their sockets.
"""

from __future__ import annotations

from typing import Any

from towpath.consumers import AsyncJsonWebsocketConsumer


class ChatConsumer(AsyncJsonWebsocketConsumer):
    groups = ["lobby"]  # joined on connect, left on disconnect

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        name, text = str(content.get("name", "anonymous")), str(content.get("text", ""))
        await self.channel_layer.group_send(
            "lobby", {"type": "chat.message", "name": name, "text": text}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"name": event["name"], "text": event["text"]})
