"""The chat's consumers: a WebSocket consumer per connection, and the page.

Every connection to ``/ws/chat/<room>/?user=<name>`` joins the room's group. A message from a
client (``{"text": "..."}``) is sent to the group as a ``chat.message`` event, and every member,
on whatever worker it runs, forwards it to its client as ``{"type": "message", "user", "text"}``.
Members also hear ``{"type": "joined", "user"}`` and ``{"type": "left", "user"}``.

Workers restart without dropping clients: a worker that stops hands its WebSockets back and
another one *resumes* them (``docs/worker.md``). The consumer handles both ends of that: a
resumed connect re-joins the room but does not announce the user again, and a hand-back leaves
the group without announcing that the user left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from towpath.consumers import AsyncJsonWebsocketConsumer, reply

PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()
MAX_TEXT = 2000
MAX_USER = 32
BAD_MESSAGE = 'send JSON text frames: {"text": "..."}'


def room_group(room: str) -> str:
    """The layer group of a room (the route allows only ``[A-Za-z0-9_-]`` in room names)."""
    return f"chat.{room}"


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One chat connection."""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = room_group(self.room)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.user = (query.get("user", [""])[-1].strip() or "anonymous")[:MAX_USER]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # A resumed connect is the same client, moved to this worker: it never left.
        if not self.scope.get("resumed"):
            await self.broadcast({"type": "joined", "user": self.user})

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        try:  # a frame that is not JSON text gets an error, not a closed socket
            await super().receive(text_data, bytes_data, **kwargs)
        except ValueError:
            await self.send_json({"type": "error", "error": BAD_MESSAGE})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"type": "error", "error": BAD_MESSAGE})
            return
        await self.broadcast({"type": "message", "user": self.user, "text": text[:MAX_TEXT]})

    async def broadcast(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every client in the room (this one included)."""
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "event": event})

    async def chat_message(self, message: dict[str, Any]) -> None:
        """A room event from the group: forward it to this client."""
        await self.send_json(message["event"])

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group is None:  # closed before connect() got that far
            return
        await self.channel_layer.group_discard(group, self.channel_name)
        # handed_back: this worker is stopping and another one resumes the connection; the
        # client is still here (docs/worker.md, "Stopping").
        if not self.handed_back:
            await self.broadcast({"type": "left", "user": self.user})


async def page(message: dict[str, Any], room: str = "lobby") -> None:
    """The chat page (``/`` and ``/room/<room>/``); its script reads the room from the URL."""
    await reply(message, 200, PAGE, content_type="text/html; charset=utf-8")
