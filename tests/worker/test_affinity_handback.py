"""A handback loses nothing: the whole protocol in one process (docs/affinity.md).

The interface server's forwarding app and two or three real ``Worker`` objects share one
in-memory layer; clients (``support.forwarding.Client``) chat through one group while the worker
that owns their connections stops gracefully, and then its successor does. Each client checks
that it got every message of every sender exactly once and in order. The end-to-end version,
with real processes over Redis, is ``test_affinity_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.forwarding import Client, receive, ws_scope
from tests.support.waiting import WAIT, until
from towpath.consumers import AsyncWebsocketConsumer
from towpath.interface.forwarding import ForwardingApp
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.worker import Worker

Message = dict[str, Any]


class Chat(AsyncWebsocketConsumer):
    groups = ["chat"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("chat", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: Message) -> None:
        await self.send(text_data=event["text"])


ROUTES = [route("websocket.connect", Chat)]


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    made = InMemoryChannelLayer(capacity=10_000)
    yield made
    unregister_channel_layer("default")
    await made.close()


@contextlib.asynccontextmanager
async def worker(layer: InMemoryChannelLayer) -> AsyncIterator[Worker]:
    made = Worker(layer, ROUTES, heartbeat_interval=0.05, handback_timeout=5.0)
    task = asyncio.get_running_loop().create_task(made.run())
    async with asyncio.timeout(WAIT):
        await made.started()
    try:
        yield made
    finally:
        made.stop()
        async with asyncio.timeout(WAIT):
            await task


def received(client: Client) -> list[str]:
    return [m["text"] for m in client.sent if m["type"] == "websocket.send"]


def check(client: Client, senders: int, count: int) -> None:
    """Every sender's messages, each exactly once, in the order it sent them."""
    by_sender: dict[int, list[int]] = {}
    for text in received(client):
        sender, seq = text.split(":")
        by_sender.setdefault(int(sender), []).append(int(seq))
    for sender in range(senders):
        assert by_sender.get(sender) == list(range(count)), (sender, by_sender.get(sender))


async def test_a_chat_through_two_handbacks_loses_and_repeats_nothing(
    layer: InMemoryChannelLayer,
) -> None:
    senders, count = 8, 60
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    try:
        async with worker(layer) as first:
            clients = [Client(app, ws_scope()) for _ in range(senders)]
            for client in clients:
                client.feed({"type": "websocket.connect"})
            async with asyncio.timeout(WAIT):
                for client in clients:
                    await client.sent_count(1)
            assert all(c.sent[0]["type"] == "websocket.accept" for c in clients)

            async def chat(index: int, client: Client) -> None:
                for seq in range(count):
                    client.feed({"type": "websocket.receive", "text": f"{index}:{seq}"})
                    await asyncio.sleep(0.004)  # pacing, not synchronisation

            def heard() -> int:
                return sum(len(received(client)) for client in clients)

            talking = asyncio.gather(*(chat(i, c) for i, c in enumerate(clients)))
            async with worker(layer) as second:
                await until(lambda: heard() > 0, "messages through the first worker")
                first.stop()  # hands every connection to the second, mid-conversation
                async with worker(layer):
                    before = heard()
                    await until(lambda: heard() > before, "messages after the first handback")
                    second.stop()  # and again, to the third
                    async with asyncio.timeout(WAIT):
                        await talking
                        while not all(len(received(c)) >= senders * count for c in clients):  # noqa: ASYNC110 (the clients' own record: no event to wait on)
                            await asyncio.sleep(0.02)
                    assert first.stats["handbacks_sent"] == senders
                    assert second.stats["handbacks_sent"] == senders
                    assert first.stats["handbacks_released"] == senders
                    for client in clients:
                        check(client, senders, count)
                        assert "websocket.close" not in [m["type"] for m in client.sent]
                        client.feed({"type": "websocket.disconnect", "code": 1000})
                        await client.finished()
        stats = app.stats
        assert stats.websocket_handbacks == 2 * senders
        assert stats.websocket_handback_timeouts == 0 and stats.websocket_frames_maybe_lost == 0
    finally:
        await app.affinity.stop()


async def test_the_new_owner_waits_for_the_old_ones_last_word(
    layer: InMemoryChannelLayer,
) -> None:
    """Played by hand: the old owner's output goes out at once, the new owner's (tagged) and
    the client's frames wait for ``towpath.released``; then they go, in order."""
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    try:
        client = Client(app, ws_scope())
        client.feed({"type": "websocket.connect"})
        connect = await receive(layer, "websocket.connect")
        reply = connect["reply_channel"]
        old, new = await layer.new_channel("worker"), await layer.new_channel("worker")
        await layer.send(reply, {"type": "websocket.accept", "owner": old})
        await client.sent_count(1)
        await layer.send(reply, {"type": "towpath.handback", "worker": old, "channel": "c.x!1"})
        resumed = await receive(layer, "websocket.connect")
        assert resumed["resumed_from"] == "c.x!1"
        assert (await receive(layer, old))["type"] == "towpath.handback.end"
        client.feed({"type": "websocket.receive", "text": "held frame"})
        await layer.send(reply, {"type": "websocket.accept", "owner": new})
        await layer.send(reply, {"type": "websocket.send", "text": "new 1", "owner": new})
        await layer.send(reply, {"type": "websocket.send", "text": "old 1"})
        await layer.send(reply, {"type": "websocket.send", "text": "old 2"})
        await client.sent_count(3)
        await layer.send(reply, {"type": "towpath.released", "worker": old, "order": 0})
        await layer.send(reply, {"type": "websocket.send", "text": "new 2", "owner": new})
        texts = [m["text"] for m in await client.sent_count(5) if "text" in m]
        assert texts == ["old 1", "old 2", "new 1", "new 2"]
        assert all("owner" not in m for m in client.sent)
        assert (await receive(layer, new))["text"] == "held frame"
        client.feed({"type": "websocket.disconnect", "code": 1000})
        await client.finished()
    finally:
        await app.affinity.stop()


async def test_an_old_owner_that_never_releases_is_let_go_after_the_timeout(
    layer: InMemoryChannelLayer,
) -> None:
    app = ForwardingApp(layer, heartbeat_timeout_seconds=0.3)
    try:
        client = Client(app, ws_scope())
        client.feed({"type": "websocket.connect"})
        reply = (await receive(layer, "websocket.connect"))["reply_channel"]
        old, new = await layer.new_channel("worker"), await layer.new_channel("worker")
        await layer.send(reply, {"type": "websocket.accept", "owner": old})
        await layer.send(reply, {"type": "towpath.handback", "worker": old})
        await receive(layer, "websocket.connect")
        client.feed({"type": "websocket.receive", "text": "held"})
        await layer.send(reply, {"type": "websocket.accept", "owner": new})
        await layer.send(reply, {"type": "websocket.send", "text": "new", "owner": new})
        assert (await receive(layer, new))["text"] == "held"  # after the timeout
        assert (await client.sent_count(2))[1] == {"type": "websocket.send", "text": "new"}
        assert app.stats.websocket_handback_timeouts == 1
        client.feed({"type": "websocket.disconnect", "code": 1000})
        await client.finished()
    finally:
        await app.affinity.stop()


async def test_a_resumed_connect_nobody_answers_is_closed_1013(
    layer: InMemoryChannelLayer,
) -> None:
    app = ForwardingApp(layer, http_timeout_seconds=0.3)
    try:
        client = Client(app, ws_scope())
        client.feed({"type": "websocket.connect"})
        reply = (await receive(layer, "websocket.connect"))["reply_channel"]
        old = await layer.new_channel("worker")
        await layer.send(reply, {"type": "websocket.accept", "owner": old})
        await layer.send(reply, {"type": "towpath.handback", "worker": old})
        await receive(layer, "websocket.connect")  # no worker answers it
        assert (await client.sent_count(2))[1] == {"type": "websocket.close", "code": 1013}
        await client.finished()
        assert app.stats.websocket_resume_timeouts == 1
    finally:
        await app.affinity.stop()


async def test_a_client_gone_before_the_answer_is_told_to_the_worker_that_answers(
    layer: InMemoryChannelLayer,
) -> None:
    """The disconnect of a client that left before any worker answered goes to the shared
    channel (any worker); when the accept comes after all, its owner gets it too, so its
    consumer instance ends instead of waiting forever."""
    app = ForwardingApp(layer)
    try:
        client = Client(app, ws_scope())
        client.feed({"type": "websocket.connect"})
        reply = (await receive(layer, "websocket.connect"))["reply_channel"]
        client.feed({"type": "websocket.disconnect", "code": 1001})
        await client.finished()
        shared = await receive(layer, "websocket.disconnect")
        late = await layer.new_channel("worker")
        await layer.send(reply, {"type": "websocket.accept", "owner": late})
        assert await receive(layer, late) == shared
        assert shared["code"] == 1001 and shared["reply_channel"] == reply
    finally:
        await app.affinity.stop()
