"""Issue 18, worker side, in process on the in-memory layer (the test plays the interface
server): a full reply channel is back-pressure, never a dead consumer; a consumer that fails
leaves its groups; heartbeats never queue behind the work.

Reply channels (``interface.*``) hold one message, so the second send to one finds it full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support.forwarding import answering
from tests.support.waiting import WAIT, until
from towpath.consumers import AsyncWebsocketConsumer
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.worker import Worker
from towpath.worker.host import ConnectionClosed, HostedHTTP
from towpath.worker.loop import DISPATCH_BATCH
from towpath.worker.room import QUIET, ReplyRoom, server_of

pytestmark = pytest.mark.timeout(30)

Message = dict[str, Any]
#: the heartbeat timeout a server that must not be judged during a test announces
PATIENT = 60.0


class Relay(AsyncWebsocketConsumer):
    """Joins ``bp``; relays ``bp.event`` text to its client, raises on ``fail``; records how
    its instances ended."""

    groups = ["bp"]
    ended: list[int] = []
    closed: list[str] = []

    async def bp_event(self, event: Message) -> None:
        if event.get("fail"):
            raise RuntimeError("bp.event handler failed on purpose")
        try:
            await self.send(text_data=event["text"])
        except ConnectionClosed as exc:
            Relay.closed.append(str(exc))
            raise

    async def disconnect(self, code: int) -> None:
        Relay.ended.append(code)


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    made = InMemoryChannelLayer(channel_capacity={"interface.*": 1})
    Relay.ended, Relay.closed = [], []
    yield made
    unregister_channel_layer("default")
    await made.close()


@asynccontextmanager
async def running(layer: InMemoryChannelLayer, **options: Any) -> AsyncIterator[Worker]:
    """A worker serving ``Relay``; forced to stop at the end (bounded: that is tested too)."""
    options.setdefault("heartbeat_interval", 0.05)
    worker = Worker(layer, [route("websocket.connect", Relay)], **options)
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    try:
        yield worker
    finally:
        worker.stop(force=True)
        async with asyncio.timeout(WAIT):
            await task


async def connect(
    layer: InMemoryChannelLayer, control: str | None = None, heartbeat_timeout: float = PATIENT
) -> str:
    """Open a WebSocket (from ``control``'s server, if given) and take its accept."""
    reply = await layer.new_channel("interface")
    message: Message = {
        "type": "websocket.connect",
        "reply_channel": reply,
        "scope": {"type": "websocket", "path": "/", "headers": []},
        "order": 0,
    }
    if control is not None:
        message.update(
            control_channel=control, sent_at=time.time(), heartbeat_timeout=heartbeat_timeout
        )
    await layer.send("websocket.connect", message)
    async with asyncio.timeout(WAIT):
        assert (await layer.receive(reply))["type"] == "websocket.accept"
    return reply


async def event(layer: InMemoryChannelLayer, text: str, **keys: Any) -> None:
    await layer.group_send("bp", {"type": "bp.event", "text": text, **keys})


async def take(layer: InMemoryChannelLayer, reply: str) -> Message:
    async with asyncio.timeout(WAIT):
        return await layer.receive(reply)


# -- the wait itself ----------------------------------------------------------------------------


async def test_a_send_to_a_full_channel_waits_for_room_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="towpath.worker")
    layer = InMemoryChannelLayer(capacity=1)
    channel = await layer.new_channel("interface")
    now = [0.0]
    room = ReplyRoom(clock=lambda: now[0])
    assert await room.send(layer.send, channel, {"type": "first"}, lambda: True)
    sending = [
        asyncio.ensure_future(room.send(layer.send, channel, {"type": kind}, lambda: True))
        for kind in ("second", "third")
    ]
    await until(lambda: room.waiting == 2)
    assert room.stats["sends_delayed"] == 2
    kinds = [(await take(layer, channel))["type"] for _ in range(3)]
    # each goes in when it finds room (two sends of one connection are never concurrent)
    assert kinds[0] == "first" and sorted(kinds[1:]) == ["second", "third"]
    assert [await sent for sent in sending] == [True, True]
    server = server_of(channel)
    assert server.startswith("interface.") and server.endswith("!")
    full = [r for r in caplog.records if "are full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.WARNING and server in full[0].getMessage()
    # the channel fills again right after: the same episode (a reader catching up)
    assert await room.send(layer.send, channel, {"type": "fourth"}, lambda: True)
    now[0] += QUIET / 2
    refill = asyncio.ensure_future(room.send(layer.send, channel, {"type": "5th"}, lambda: True))
    await until(lambda: room.waiting == 1)
    assert (await take(layer, channel))["type"] == "fourth"
    assert await refill and room.stats["sends_delayed"] == 3
    assert (await take(layer, channel))["type"] == "5th"
    assert not [r for r in caplog.records if "takes messages again" in r.getMessage()]
    # no send waited for QUIET seconds, and one goes through at once: it takes messages again
    now[0] += QUIET
    assert await room.send(layer.send, channel, {"type": "6th"}, lambda: True)
    (again,) = [r for r in caplog.records if "takes messages again" in r.getMessage()]
    assert again.levelno == logging.INFO and server in again.getMessage()
    assert len([r for r in caplog.records if "are full" in r.getMessage()]) == 1
    await layer.close()


async def test_a_wait_ends_when_the_connection_is_no_longer_ours_or_the_worker_cuts() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    channel = await layer.new_channel("interface")
    await layer.send(channel, {"type": "filler"})
    room = ReplyRoom()
    ours = True
    waiting = asyncio.ensure_future(room.send(layer.send, channel, {"type": "x"}, lambda: ours))
    await until(lambda: room.waiting == 1)
    ours = False
    async with asyncio.timeout(WAIT):
        assert await waiting is False
    waiting = asyncio.ensure_future(room.send(layer.send, channel, {"type": "y"}, lambda: True))
    await until(lambda: room.waiting == 1)
    room.cut = True
    async with asyncio.timeout(WAIT):
        assert await waiting is False
    assert (await take(layer, channel))["type"] == "filler"  # nothing else was sent
    assert room.stats["sends_delayed"] == 2
    await layer.close()


async def test_an_http_response_waits_for_room_in_order_and_ends_when_abandoned() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    reply = await layer.new_channel("interface")
    message = {"type": "http.request", "reply_channel": reply, "body": b""}
    await layer.send(reply, {"type": "filler"})
    host = HostedHTTP(layer, message)
    await host.send({"type": "http.response.start", "status": 200, "headers": []})
    responding = asyncio.ensure_future(host.send({"type": "http.response.body", "body": b"ok"}))
    await until(lambda: host.room.waiting == 1)
    kinds = [(await take(layer, reply))["type"] for _ in range(3)]
    assert kinds == ["filler", "http.response.start", "http.response.body"]
    await responding
    assert host.complete and host.room.stats["sends_delayed"] >= 2

    await layer.send(reply, {"type": "filler"})
    host = HostedHTTP(layer, message)
    failing = asyncio.ensure_future(host.fail())
    await until(lambda: host.room.waiting == 1)
    host.abandon()  # its server is gone (the response was complete: not counted as ended)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(WAIT):
            await failing
    await layer.close()


# -- consumers ------------------------------------------------------------------------------------


async def test_a_full_reply_channel_delays_group_events_and_kills_no_consumer(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="towpath.worker")
    async with running(layer) as worker:
        reply = await connect(layer)
        for n in range(5):
            await event(layer, f"event {n}")
        await until(lambda: worker.room.waiting == 1)  # event 0 filled the channel
        texts = [(await take(layer, reply))["text"] for _ in range(5)]
        assert texts == [f"event {n}" for n in range(5)]
        await until(lambda: worker.room.waiting == 0)
        assert worker.stats["sends_delayed"] >= 1
        assert reply in worker.connections and Relay.ended == [] and Relay.closed == []
        assert "bp" in layer._groups
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert caplog.text.count("are full") == 1


async def test_a_handler_that_raises_leaves_its_groups_and_its_client_is_closed_1011(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(layer) as worker:
        reply = await connect(layer)
        await event(layer, "before")  # fills the reply channel: the 1011 close waits for room
        await event(layer, "boom", fail=True)
        await until(lambda: "bp" not in layer._groups)
        assert reply in worker.connections  # its close waits
        assert (await take(layer, reply))["text"] == "before"
        assert await take(layer, reply) == {"type": "websocket.close", "code": 1011}
        await until(lambda: not worker.connections)
    assert "bp.event handler failed on purpose" in caplog.text
    assert "'bp.event' message" in caplog.text


async def test_a_send_waiting_on_a_connection_its_server_no_longer_holds_ends_groups_left(
    layer: InMemoryChannelLayer,
) -> None:
    async with running(layer) as worker:
        control = await layer.new_channel("interface")
        async with answering(layer, control):
            reply = await connect(layer, control)
            await event(layer, "fills")
            await event(layer, "waits")
            await until(lambda: worker.room.waiting == 1)
        async with answering(layer, control, unknown=(reply,)):
            await until(lambda: not worker.connections)
        assert Relay.closed and "no longer holds it" in Relay.closed[0]
        assert "bp" not in layer._groups
        assert worker.stats["ended_unknown"] == 1 and worker.room.waiting == 0
        assert (await take(layer, reply))["text"] == "fills"  # nothing more, no close
        assert layer._mailbox.length(reply) == 0


async def test_a_send_waiting_on_a_silent_server_ends_when_it_is_judged_gone(
    layer: InMemoryChannelLayer,
) -> None:
    async with running(layer) as worker:
        control = await layer.new_channel("interface")
        reply = await connect(layer, control, heartbeat_timeout=0.1)
        await event(layer, "fills")
        await event(layer, "waits")
        await until(lambda: worker.room.waiting == 1)
        # nobody reads the control channel (it holds 1): the heartbeats find it full and are
        # sent again by a task of their own; the server never answers: it is gone
        await until(lambda: not worker.connections)
        assert worker.stats["servers_lost"] == 1 and worker.stats["ended_server_gone"] == 1
        assert worker.stats["heartbeats_delayed"] >= 1
        assert Relay.closed and "bp" not in layer._groups
        assert (await take(layer, reply))["text"] == "fills"


# -- stopping -----------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
async def test_a_stop_does_not_hang_on_a_waiting_send(
    layer: InMemoryChannelLayer, force: bool
) -> None:
    worker = Worker(
        layer,
        [route("websocket.connect", Relay)],
        heartbeat_interval=0.05,
        graceful_timeout=0.3,
    )
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    reply = await connect(layer)  # a server too old to be judged: nothing ends the wait
    await event(layer, "fills")
    await event(layer, "waits")
    await until(lambda: worker.room.waiting == 1)
    began = time.monotonic()
    worker.stop(force=force)
    async with asyncio.timeout(WAIT):
        await task
    # forced: at once; graceful: its graceful timeout (the handback waited too), then cut
    assert time.monotonic() - began < (1.0 if force else 0.3 + 1.0)
    assert worker.room.waiting == 0 and not worker.tasks
    assert "bp" not in layer._groups  # the cancelled consumer left its groups
    assert (await take(layer, reply))["text"] == "fills"


# -- heartbeats -----------------------------------------------------------------------------------


async def test_a_full_control_channel_holds_up_no_other_servers_heartbeats(
    layer: InMemoryChannelLayer,
) -> None:
    async with running(layer) as worker:
        stuck, fine = await layer.new_channel("interface"), await layer.new_channel("interface")
        async with answering(layer, stuck):
            stuck_reply = await connect(layer, stuck)
        await layer.send(stuck, {"type": "filler"})  # its server stopped reading
        async with answering(layer, fine) as heard:
            fine_reply = await connect(layer, fine)
            await until(lambda: len(heard) >= 5)
            assert all(beat["connections"] == [fine_reply] for beat in heard[-3:])
        assert worker.stats["heartbeats_delayed"] >= 1
        assert (await take(layer, stuck))["type"] == "filler"
        # the heartbeat waiting for room goes out, the newest listing
        beat = await take(layer, stuck)
        assert beat["type"] == "towpath.heartbeat" and beat["connections"] == [stuck_reply]


class Counting(Worker):
    """A worker that counts the messages it dispatched."""

    dispatched = 0

    def _dispatch(self, channel: str, message: Message, slot: Any) -> None:
        self.dispatched += 1
        super()._dispatch(channel, message, slot)


async def test_the_receive_loop_lets_other_tasks_run_between_batches() -> None:
    layer = InMemoryChannelLayer(capacity=1000)
    for n in range(500):  # fetched already: each receive returns without suspending
        await layer.send("jobs", {"type": "job", "n": n})

    async def job(message: Message) -> None:
        pass

    worker = Counting(layer, [route("jobs", job)], concurrency=1000)
    runs: list[int] = []

    async def tick() -> None:
        last = 0
        while worker.dispatched < 500:
            await asyncio.sleep(0)
            runs.append(worker.dispatched - last)
            last = worker.dispatched

    ticking = asyncio.ensure_future(tick())
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await ticking
    assert max(runs) <= DISPATCH_BATCH  # another task ran at least every batch
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    unregister_channel_layer("default")
    await layer.close()
