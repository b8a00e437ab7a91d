"""Publish a notification to every client waiting on a topic, with no worker involved::

    python -m examples.notifications.publish news "locks opened at 9"

:func:`publish` is the whole publisher: two ``group_send`` calls of ASGI response events, which
the layer delivers straight to the reply channels the workers parked. ``POST /publish/<topic>``
calls the same function from a worker; this script calls it from anywhere that reaches the
layer (a cron job, another service). It reads the layer from ``settings.py`` beside it
(``REDIS_URL``), or from ``--settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

from towpath.config import build_layer, load_settings
from towpath.layers import BaseChannelLayer

TOPIC_PATTERN = r"[A-Za-z0-9_-]{1,64}"
SETTINGS = str(Path(__file__).with_name("settings.py"))


def poll_group(topic: str) -> str:
    """The group of the long-poll requests waiting on ``topic``."""
    return f"poll.{topic}"


def stream_group(topic: str) -> str:
    """The group of the open event streams (SSE) of ``topic``."""
    return f"sse.{topic}"


async def publish(layer: BaseChannelLayer, topic: str, text: str) -> str:
    """Send ``text`` to everyone waiting on ``topic``; returns the event's id.

    Each long-poll response was started by the worker that parked it, so one
    ``http.response.body`` completes it; each stream gets one more SSE event and stays open.
    Raises ``ValueError`` for a topic the routes would not accept.
    """
    if not re.fullmatch(TOPIC_PATTERN, topic):
        raise ValueError(f"topic {topic!r} must match {TOPIC_PATTERN}")
    event_id = str(time.time_ns())
    data = json.dumps({"id": event_id, "topic": topic, "text": text}).encode()
    await asyncio.gather(
        layer.group_send(
            poll_group(topic), {"type": "http.response.body", "body": data, "more_body": False}
        ),
        layer.group_send(
            stream_group(topic),
            {
                "type": "http.response.body",
                "body": b"id: %s\ndata: %s\n\n" % (event_id.encode(), data),
                "more_body": True,
            },
        ),
    )
    return event_id


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.notifications.publish",
        description="Publish a notification to every client waiting on a topic.",
    )
    parser.add_argument("topic", help=f"the topic ({TOPIC_PATTERN})")
    parser.add_argument("text", help="the notification's text")
    parser.add_argument("--settings", default=SETTINGS, help="settings module or .py path")
    args = parser.parse_args(argv)
    if not re.fullmatch(TOPIC_PATTERN, args.topic):
        parser.error(f"topic {args.topic!r} must match {TOPIC_PATTERN}")
    layer = build_layer(load_settings(args.settings).layer("default"))
    try:
        event_id = await publish(layer, args.topic, args.text)
    finally:
        await layer.close()
    print(f"published {event_id} to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
