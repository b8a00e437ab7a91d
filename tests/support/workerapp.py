"""The application the worker tests run, in process and under ``towpath runworker``.

Every answer carries ``TAG`` (the ``WORKERAPP_TAG`` environment variable) so a test can tell
which worker answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any
from urllib.parse import parse_qs

from towpath.consumers import AsyncWebsocketConsumer
from towpath.consumers.messages import current_layer, reply
from towpath.routing import route

TAG = os.environ.get("WORKERAPP_TAG", "w")

Message = dict[str, Any]


def _query(message: Message) -> dict[str, str]:
    raw = message["scope"].get("query_string", b"").decode()
    return {key: values[-1] for key, values in parse_qs(raw).items()}


async def hello(message: Message, name: str) -> None:
    await reply(message, 200, f"hello {name} from {TAG}")


async def boom(message: Message) -> None:
    raise RuntimeError("boom on purpose")


async def slow(message: Message) -> None:
    print(f"slow started on {TAG}", file=sys.stderr, flush=True)  # for the SIGTERM test
    await asyncio.sleep(float(_query(message).get("s", "1")))
    await reply(message, 200, f"slow done by {TAG}")


async def thumb_request(message: Message) -> None:
    """Queue a job on ``thumbnail``; the job's worker answers the client itself."""
    layer = current_layer.get()
    assert layer is not None
    job = {"type": "thumbnail", "reply_channel": message["reply_channel"], **_query(message)}
    await layer.send("thumbnail", job)


async def thumbnail(message: Message) -> None:
    await reply(message, 200, f"thumbnail {message.get('id')} by {TAG}")


#: the sync consumer's gate and what it saw (in-process tests)
sync_gate = threading.Event()
sync_entered = threading.Event()
sync_threads: list[str] = []


def sync_hello(message: Message) -> None:
    """A plain ``def``: runs in a thread; blocks until ``sync_gate`` (at most 10 s)."""
    sync_threads.append(threading.current_thread().name)
    sync_entered.set()
    sync_gate.wait(10)


class ChatConsumer(AsyncWebsocketConsumer):
    groups = ["chat"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("chat", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: Message) -> None:
        await self.send(text_data=f"{event['text']} via {TAG}")


class EchoConsumer(AsyncWebsocketConsumer):
    """Echoes each text frame with the worker's tag; joins no group (a Redis that restarts
    empty keeps nothing it needs)."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"{text_data} via {TAG}")


class RaisingConsumer(AsyncWebsocketConsumer):
    """Fails on the client's first frame (the error-logging tests look for this frame)."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError(f"raising consumer got {text_data!r}")


routes = [
    route("http.request", hello, path=r"^/hello/(?P<name>[^/]+)$"),
    route("http.request", boom, path=r"^/boom$"),
    route("http.request", slow, path=r"^/slow$"),
    route("http.request", thumb_request, path=r"^/thumb$"),
    route("websocket.connect", ChatConsumer, path=r"^/chat/$"),
    route("websocket.connect", RaisingConsumer, path=r"^/raise/$"),
    route("websocket.connect", EchoConsumer, path=r"^/echo/$"),
    route("thumbnail", thumbnail),
    route("sync.job", sync_hello),
]

#: http only (for the "no websocket channels" filter tests)
jobs_only = [route("thumbnail", thumbnail)]
