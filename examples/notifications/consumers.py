"""The notification consumers. The two that wait (``poll``, ``events``) return at once: they
send the response start, park the request's reply channel in the topic's group and leave. The
answer comes later from whoever publishes (``publish.publish``), straight to the reply channels,
so no worker holds a slot, a task or any memory for a waiting client, and a worker can restart
while thousands wait.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from examples.notifications.publish import poll_group, publish, stream_group
from towpath.consumers import reply, reply_events
from towpath.layers import get_channel_layer

logger = logging.getLogger("examples.notifications")

PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()
MAX_TEXT_BYTES = 4096

Message = dict[str, Any]


def _where(message: Message) -> str:
    scope = message["scope"]
    query = scope.get("query_string", b"").decode("latin-1")
    path: str = scope["path"]
    return path + (f"?{query}" if query else "")


async def poll(message: Message, topic: str) -> None:
    """``GET /poll/<topic>``: held until the next publish, which completes it with the
    notification as JSON. Clients re-poll after an answer, or after a timeout of their own
    (once the response started the server applies none)."""
    reply_channel = message["reply_channel"]
    # The start goes out first, so that a publish can answer with one body event: a member
    # added to the group before its start would get a body with no start (a 502).
    await reply_events(
        message,
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [[b"content-type", b"application/json"], [b"cache-control", b"no-store"]],
        },
    )
    await get_channel_layer().group_add(poll_group(topic), reply_channel)
    logger.info("parked %s in %s", _where(message), poll_group(topic))


async def events(message: Message, topic: str) -> None:
    """``GET /events/<topic>``: a Server-Sent Events stream; every publish adds one event."""
    await reply_events(
        message,
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                [b"content-type", b"text/event-stream"],
                [b"cache-control", b"no-cache"],
                [b"x-accel-buffering", b"no"],  # nginx: do not buffer the stream
            ],
        },
    )
    await get_channel_layer().group_add(stream_group(topic), message["reply_channel"])
    # A comment (ignored by EventSource) after joining: a client that reads it is subscribed.
    # A publish that came in between is just as good after the start.
    await reply_events(
        message,
        {
            "type": "http.response.body",
            "body": f"retry: 2000\n: subscribed to {topic}\n\n".encode(),
            "more_body": True,
        },
    )
    logger.info("parked %s in %s", _where(message), stream_group(topic))


async def publish_request(message: Message, topic: str) -> None:
    """``POST /publish/<topic>`` with the text as the body: publish it, answer with its id."""
    body: bytes = message["body"]
    if message.get("more_body") or len(body) > MAX_TEXT_BYTES:
        await reply(message, 413, f"the text is limited to {MAX_TEXT_BYTES} bytes\n")
        return
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        await reply(message, 400, "POST the notification's text as the request body\n")
        return
    event_id = await publish(get_channel_layer(), topic, text)
    answer = json.dumps({"id": event_id, "topic": topic})
    await reply(message, 200, answer.encode(), content_type="application/json")


async def page(message: Message) -> None:
    """``GET /``: a page that follows a topic both ways and publishes to it."""
    await reply(message, 200, PAGE, content_type="text/html; charset=utf-8")
