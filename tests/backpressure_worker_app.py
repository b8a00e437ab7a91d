"""The app of tests/test_backpressure_worker_e2e.py: every client of ``/bp/`` joins the group
``bp``, is sent ``ready <channel name>`` (the member it is), and gets every ``bp.event``'s
``text``. ``/bp/hog/`` blocks its worker's event loop (sync code) for ``HOG_SECONDS`` on the
client frame ``hog``."""

from __future__ import annotations

import os
import time
from typing import Any

from towpath.consumers import AsyncWebsocketConsumer
from towpath.routing import route

GROUP = "bp"


class BackpressureConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def connect(self) -> None:
        await self.accept()
        ready = "resumed" if self.scope.get("resumed") else "ready"
        await self.send(text_data=f"{ready} {self.channel_name}")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "hog":
            # a CPU hog: sync code that blocks the worker's event loop
            time.sleep(float(os.environ.get("HOG_SECONDS", "3")))  # noqa: ASYNC251
            await self.send(text_data="hogged")

    async def bp_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


routes = [route("websocket.connect", BackpressureConsumer, path=r"^/bp/")]
