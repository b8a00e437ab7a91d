"""The web pool's consumers: the page, and the WebSocket that takes job requests.

Each browser connects to ``/ws/jobs/?client=<id>`` with an id it made up; the consumer joins
the group ``jobs.<id>``. A request ``{"action": "thumbnail", "name": "..."}`` becomes a message
on the ``thumbnail`` channel naming that group, and the job pool sends its progress there. The
group is derived from the connection's scope, not from this instance, so when a worker restart
moves the connection to another worker (a *resumed* connect, same scope) the new instance joins
the same group and the progress of jobs already running keeps arriving.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from towpath.consumers import AsyncJsonWebsocketConsumer, reply
from towpath.layers import ChannelFull

PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
JOB_CHANNEL = "thumbnail"


class JobsConsumer(AsyncJsonWebsocketConsumer):
    """One browser: takes job requests, forwards the job pool's updates."""

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        client = query.get("client", [""])[-1]
        if not CLIENT_ID.fullmatch(client):
            await self.close()  # rejected: HTTP 403
            return
        self.group = f"jobs.{client}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("action") != "thumbnail":
            await self.send_json({"type": "error", "error": 'send {"action": "thumbnail"}'})
            return
        name = str(content.get("name") or "towpath")[:64]
        job = uuid.uuid4().hex[:12]
        try:
            await self.channel_layer.send(
                JOB_CHANNEL, {"type": "thumbnail", "job": job, "name": name, "group": self.group}
            )
        except ChannelFull:  # the job pool is behind: say so rather than queue without end
            await self.send_json({"type": "rejected", "job": job, "error": "too busy, try later"})
            return
        await self.send_json({"type": "queued", "job": job, "name": name})

    async def job_update(self, event: dict[str, Any]) -> None:
        """Progress from the job pool (``group_send`` to this client's group)."""
        await self.send_json(event["update"])

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)


async def page(message: dict[str, Any]) -> None:
    """``GET /``: the page."""
    await reply(message, 200, PAGE, content_type="text/html; charset=utf-8")
