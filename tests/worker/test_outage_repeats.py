"""Issue 17, item 7: a send cut short by a layer outage repeats and loses nothing.

When the connection to the layer's server breaks while a command is in flight, the layer
cannot say whether it ran (``LayerConnectionError``: "the command may or may not have run").
For WebSocket traffic both ends send such a message once more, and the receiving end drops
what it had already: a client frame by its ``order`` (the worker), a worker's output by its
``seq`` (the server). And right after an outage a full channel is its reader still
reconnecting: a client frame waits for it rather than closing the client 1013.

In process: the forwarding app (its client played by ``support.forwarding.Client``) and a real
``Worker`` over the in-memory layer, which is made to fail a send the way Redis does when it
dies (or says it just had an outage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.forwarding import Client, ws_scope
from tests.support.waiting import WAIT
from towpath.consumers import AsyncWebsocketConsumer
from towpath.interface.forwarding import ForwardingApp
from towpath.layers.base import LayerConnectionError
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.outages import RECONNECT_GRACE
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.worker import Worker

Message = dict[str, Any]
TIMEOUT = 0.5


class CutShort(InMemoryChannelLayer):
    """The in-memory layer, with a way to fail the next send to a channel as a layer whose
    server died mid-command does (having stored it, or not), and to say it just had an
    outage."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: channel prefix -> store the message before failing?
        self.cut: dict[str, bool] = {}
        self.count = 0

    @property
    def outages(self) -> int:
        return self.count

    async def send(self, channel: str, message: Message) -> None:
        for prefix, stored in list(self.cut.items()):
            if channel.startswith(prefix):
                del self.cut[prefix]
                if stored:
                    await super().send(channel, message)
                raise LayerConnectionError("connection lost: the command may or may not have run")
        await super().send(channel, message)


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo {text_data}")


@pytest.fixture
async def stack() -> AsyncIterator[tuple[CutShort, ForwardingApp, Worker]]:
    layer = CutShort()
    app = ForwardingApp(layer, heartbeat_timeout_seconds=TIMEOUT)
    worker = Worker(layer, [route("websocket.connect", Echo)], heartbeat_interval=0.05)
    running = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    yield layer, app, worker
    worker.stop(force=True)
    async with asyncio.timeout(WAIT):
        await running
    await app.affinity.stop()
    unregister_channel_layer("default")
    await layer.close()


async def echoed(client: Client, count: int) -> list[str]:
    """The texts of the first ``count`` messages after the accept."""
    sent = await client.sent_count(count + 1)
    return [message["text"] for message in sent[1:]]


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "not-stored"])
async def test_a_send_cut_short_either_way_is_echoed_once_in_order(
    stack: tuple[CutShort, ForwardingApp, Worker], stored: bool
) -> None:
    layer, app, worker = stack
    client = Client(app, ws_scope())
    client.feed({"type": "websocket.connect"})
    assert (await client.sent_count(1))[0]["type"] == "websocket.accept"
    client.feed({"type": "websocket.receive", "text": "a"})
    assert await echoed(client, 1) == ["echo a"]

    layer.cut[worker.process_channel] = stored  # the client frame, to its owner
    client.feed({"type": "websocket.receive", "text": "b"})
    assert await echoed(client, 2) == ["echo a", "echo b"]

    layer.cut["interface."] = stored  # the worker's echo, to the reply channel
    client.feed({"type": "websocket.receive", "text": "c"})
    client.feed({"type": "websocket.receive", "text": "d"})
    assert await echoed(client, 4) == ["echo a", "echo b", "echo c", "echo d"]

    client.feed({"type": "websocket.receive", "text": "e"})  # nothing left over in between
    assert await echoed(client, 5) == ["echo a", "echo b", "echo c", "echo d", "echo e"]
    assert all(message["type"] == "websocket.send" for message in client.sent[1:])
    assert "owner" not in client.sent[1] and "seq" not in client.sent[1]
    assert app.stats.websocket_1013 == 0


async def test_a_full_channel_right_after_an_outage_holds_the_frame_not_the_client() -> None:
    """The owner's channel full just after an outage: its reader is reconnecting, the frame
    waits. Once workers are judged again, a full channel closes the client 1013 (daphne's
    answer, kept)."""
    layer = CutShort(channel_capacity={"worker.*": 1})
    app = ForwardingApp(layer, heartbeat_timeout_seconds=TIMEOUT)
    owner = await layer.new_channel("worker")  # nobody reads it but the test
    try:
        client = Client(app, ws_scope())
        client.feed({"type": "websocket.connect"})
        async with asyncio.timeout(WAIT):
            connect = await layer.receive("websocket.connect")
        await layer.send(connect["reply_channel"], {"type": "websocket.accept", "owner": owner})
        await client.sent_count(1)
        client.feed({"type": "websocket.receive", "text": "fills it"})
        async with asyncio.timeout(WAIT):
            assert (await layer.receive(owner))["text"] == "fills it"
        client.feed({"type": "websocket.receive", "text": "fills it again"})
        layer.count += 1  # an outage came and went
        loop = asyncio.get_running_loop()
        seen = loop.time()
        assert not app.affinity.judging(seen)  # seen now (as by the sweep)
        client.feed({"type": "websocket.receive", "text": "waits"})
        await asyncio.sleep(TIMEOUT)  # the owner does not read for a while (no event)
        assert client.sent[1:] == [] and app.stats.websocket_1013 == 0
        async with asyncio.timeout(WAIT):
            assert (await layer.receive(owner))["text"] == "fills it again"
            assert (await layer.receive(owner))["text"] == "waits"
        client.feed({"type": "websocket.receive", "text": "fills it once more"})
        client.feed({"type": "websocket.receive", "text": "closes it"})
        close = (await client.sent_count(2))[1]
        assert close == {"type": "websocket.close", "code": 1013}
        assert loop.time() - seen >= TIMEOUT + RECONNECT_GRACE  # only once the grace is over
        assert app.stats.websocket_1013 == 1
    finally:
        await app.affinity.stop()
        await layer.close()


async def test_a_worker_drops_only_repeated_frames_not_those_held_before_its_connect(
    stack: tuple[CutShort, ForwardingApp, Worker],
) -> None:
    """A frame held while its connection was handed back may carry an ``order`` below the
    resumed connect's: it is delivered. A frame whose ``order`` is not above the last frame
    delivered is a repeat: dropped."""
    layer, _, worker = stack
    reply_channel = await layer.new_channel("interface")
    connect = {
        "type": "websocket.connect",
        "reply_channel": reply_channel,
        "scope": {"type": "websocket", "path": "/ws", "headers": [], "resumed": True},
        "order": 5,
    }
    await layer.send("websocket.connect", connect)
    async with asyncio.timeout(WAIT):
        assert (await layer.receive(reply_channel))["type"] == "websocket.accept"
        for order, text in [(4, "held"), (4, "repeat"), (6, "next"), (5, "late repeat")]:
            frame = {"type": "websocket.receive", "reply_channel": reply_channel}
            await layer.send(worker.process_channel, {**frame, "order": order, "text": text})
        assert (await layer.receive(reply_channel))["text"] == "echo held"
        assert (await layer.receive(reply_channel))["text"] == "echo next"
        await layer.send(worker.process_channel, {**frame, "order": 7, "text": "last"})
        assert (await layer.receive(reply_channel))["text"] == "echo last"


async def test_a_full_reply_channel_right_after_an_outage_holds_the_output() -> None:
    """The worker's side of the same: its output meets the reply channel full while the
    server's reader reconnects; it waits instead of failing its consumer."""
    layer = CutShort(channel_capacity={"interface.*": 1})
    worker = Worker(layer, [route("websocket.connect", Echo)], heartbeat_interval=0.05)
    running = asyncio.get_running_loop().create_task(worker.run())
    try:
        async with asyncio.timeout(WAIT):
            await worker.started()
            reply_channel = await layer.new_channel("interface")  # read by the test alone
            connect = {
                "type": "websocket.connect",
                "reply_channel": reply_channel,
                "scope": {"type": "websocket", "path": "/ws", "headers": []},
                "order": 0,
                "heartbeat_timeout": TIMEOUT,
            }
            await layer.send("websocket.connect", connect)
            assert (await layer.receive(reply_channel))["type"] == "websocket.accept"
            layer.count += 1  # an outage came and went
            frame = {"type": "websocket.receive", "reply_channel": reply_channel}
            for order, text in [(1, "a"), (2, "b")]:
                await layer.send(worker.process_channel, {**frame, "order": order, "text": text})
            while layer.stats.full == 0:  # noqa: ASYNC110 (the worker's own task: no event)
                await asyncio.sleep(0.01)  # until "echo b" met the channel full
            assert (await layer.receive(reply_channel))["text"] == "echo a"
            assert (await layer.receive(reply_channel))["text"] == "echo b"  # it waited
    finally:
        worker.stop(force=True)
        async with asyncio.timeout(WAIT):
            await running
        unregister_channel_layer("default")
        await layer.close()
