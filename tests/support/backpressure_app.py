"""The application of the server-side back-pressure tests
(``tests/e2e/test_backpressure_server_e2e.py``):
every WebSocket of ``/bp/`` joins the group ``bp`` and is sent ``"ready <channel>"`` once its
consumer is connected (a resumed consumer says it again); ``bp.event`` group events are
forwarded to the client as text."""

from __future__ import annotations

from typing import Any

from towpath.consumers import AsyncWebsocketConsumer
from towpath.routing import route

GROUP = "bp"


class GroupConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"ready {self.channel_name}")

    async def bp_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


routes = [route("websocket.connect", GroupConsumer, path=r"^/bp/$")]
