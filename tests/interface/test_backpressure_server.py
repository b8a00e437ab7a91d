"""Issue 18, server side, in memory: protocol messages wait for room instead of being dropped,
a stalled server does not judge workers by heartbeats it could not read, and output of a
worker that is not a connection's owner never reaches its client.

``ProtocolSends`` runs on an injected clock and sleep (no waiting); the forwarding app runs
on the in-memory layer with a small capacity, its ASGI side driven by queues.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from towpath.interface.delivery import ProtocolSends
from towpath.interface.forwarding import ForwardingApp, ForwardingStats
from towpath.layers.base import ChannelFull
from towpath.layers.memory import InMemoryChannelLayer
from towpath.wire import WEBSOCKET_CONNECT_CHANNEL, WEBSOCKET_DISCONNECT_CHANNEL

pytestmark = pytest.mark.timeout(30)

Message = dict[str, Any]


class FakeTime:
    """A clock that the injected sleep moves forward (no real waiting)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class FullFor:
    """A layer send that raises ``ChannelFull`` for its first ``n`` calls."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.sent: list[tuple[str, Message]] = []

    async def __call__(self, channel: str, message: Message) -> None:
        self.calls += 1
        if self.calls <= self.n:
            raise ChannelFull(channel)
        self.sent.append((channel, message))


def sends(timeout: float = 30.0) -> tuple[ProtocolSends, ForwardingStats, FakeTime]:
    time = FakeTime()
    stats = ForwardingStats()
    protocol = ProtocolSends(stats, timeout, clock=time.clock, sleep=time.sleep, rand=lambda: 0.5)
    return protocol, stats, time


async def test_a_full_channel_is_retried_with_back_off_until_it_takes_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protocol, stats, time = sends()
    send = FullFor(5)
    message = {"type": "websocket.disconnect", "code": 1000}
    with caplog.at_level(logging.INFO, "towpath.interface.forwarding"):
        assert await protocol.send(send, "websocket.disconnect", message)
    assert send.sent == [("websocket.disconnect", message)]
    assert send.calls == 6
    # jitter fixed at the middle: 10 ms doubling
    assert time.pauses == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])
    assert (stats.protocol_sends_delayed, stats.protocol_sends_failed) == (1, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "websocket.disconnect is full" in warnings[0].getMessage()
    assert "takes protocol messages again" in caplog.text
    assert protocol.waiting("websocket.disconnect") == 0


async def test_the_back_off_is_capped_and_jittered() -> None:
    time = FakeTime()
    draws = iter([0.0, 1.0] * 20)
    protocol = ProtocolSends(
        ForwardingStats(), 30.0, clock=time.clock, sleep=time.sleep, rand=lambda: next(draws)
    )
    assert await protocol.send(FullFor(12), "c", {"type": "x"})
    # half, then one and a half times the delay; the delay stops doubling at 0.5 s
    assert time.pauses[:2] == pytest.approx([0.005, 0.03])
    assert max(time.pauses) == pytest.approx(0.75)
    assert time.pauses[-2:] == pytest.approx([0.25, 0.75])


async def test_the_deadline_gives_the_message_up_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protocol, stats, time = sends(timeout=2.0)
    send = FullFor(10**6)
    with caplog.at_level(logging.WARNING, "towpath.interface.forwarding"):
        assert not await protocol.send(send, "websocket.connect", {"type": "websocket.connect"})
    assert time.now == pytest.approx(102.0)  # the last pause is cut to the deadline
    assert send.sent == []
    assert (stats.protocol_sends_delayed, stats.protocol_sends_failed) == (1, 1)
    assert "Gave up a websocket.connect to websocket.connect" in caplog.text


async def test_one_warning_per_episode_however_many_wait() -> None:
    time = FakeTime()
    stats = ForwardingStats()
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        time.now += seconds
        await asyncio.sleep(0)

    target = [50]
    reached = asyncio.Event()

    async def send(channel: str, message: Message) -> None:
        if protocol.waiting(channel) >= target[0]:
            reached.set()
        if not gate.is_set():
            raise ChannelFull(channel)

    protocol = ProtocolSends(stats, 30.0, clock=time.clock, sleep=sleep)
    logger = logging.getLogger("towpath.interface.forwarding")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        tasks = [asyncio.create_task(protocol.send(send, "ch", {"type": "t"})) for _ in range(50)]
        await reached.wait()
        gate.set()
        assert all(await asyncio.gather(*tasks))
        gate.clear()  # a new episode warns again
        target[0] = 1
        reached.clear()
        again = asyncio.create_task(protocol.send(send, "ch", {"type": "t"}))
        await reached.wait()
        gate.set()
        assert await again
    finally:
        logger.removeHandler(handler)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert stats.protocol_sends_delayed == 51 and stats.protocol_sends_failed == 0


async def test_a_send_no_longer_wanted_stops_quietly() -> None:
    protocol, stats, _ = sends()
    wanted = iter([True, True, False])
    send = FullFor(10**6)
    assert not await protocol.send(send, "c", {"type": "t"}, lambda: next(wanted))
    assert send.calls == 3 and stats.protocol_sends_failed == 0


async def test_other_layer_errors_are_not_retried() -> None:
    protocol, stats, _ = sends()

    async def send(channel: str, message: Message) -> None:
        raise OSError("broken")

    with pytest.raises(OSError, match="broken"):
        await protocol.send(send, "c", {"type": "t"})
    assert stats.protocol_sends_delayed == 0


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="protocol_send_timeout"):
        ProtocolSends(ForwardingStats(), 0)


# -- the forwarding app on the in-memory layer ------------------------------------------------


class Client:
    """The ASGI side of one WebSocket: what the server would pass and what the app sent."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.changed = asyncio.Event()

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self.changed.set()

    async def wait_for(self, kind: str, count: int = 1) -> None:
        while sum(m["type"] == kind for m in self.sent) < count:
            self.changed.clear()
            await self.changed.wait()


SCOPE = {"type": "websocket", "path": "/ws/", "headers": [], "query_string": b""}


async def connect(app: ForwardingApp, layer: InMemoryChannelLayer) -> tuple[Client, Message]:
    """A WebSocket connected through ``app``; its connect as a worker received it."""
    client = Client()
    await client.incoming.put({"type": "websocket.connect"})
    task = asyncio.create_task(app(dict(SCOPE), client.receive, client.send))
    client.task = task  # type: ignore[attr-defined]
    connect = await layer.receive(WEBSOCKET_CONNECT_CHANNEL)
    return client, connect


async def test_disconnect_notices_wait_for_room_on_a_full_disconnect_channel() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    clients = []
    for _ in range(5):
        client, message = await connect(app, layer)
        await layer.send(message["reply_channel"], {"type": "websocket.accept"})
        await client.wait_for("websocket.accept")
        clients.append(client)
    for client in clients:  # all leave at once; the disconnect channel holds 2
        await client.incoming.put({"type": "websocket.disconnect", "code": 1000})
    notices = []
    async with asyncio.timeout(10):
        while len(notices) < 5:
            notices.append(await layer.receive(WEBSOCKET_DISCONNECT_CHANNEL))
        await asyncio.gather(*(c.task for c in clients))  # type: ignore[attr-defined]
    assert len({n["reply_channel"] for n in notices}) == 5
    assert app.stats.protocol_sends_delayed >= 3
    assert app.stats.protocol_sends_failed == 0
    await app.affinity.stop()


async def test_a_burst_of_resumes_is_admitted_without_refusals() -> None:
    layer = InMemoryChannelLayer(capacity=3)
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    worker = "worker.a!dead"
    clients = []
    for _ in range(10):
        client, message = await connect(app, layer)
        await layer.send(message["reply_channel"], {"type": "websocket.accept", "owner": worker})
        await client.wait_for("websocket.accept")
        clients.append(client)
    await app.affinity.worker_gone(worker)  # 10 resumed connects, room for 3
    resumed = []
    async with asyncio.timeout(10):
        while len(resumed) < 10:
            resumed.append(await layer.receive(WEBSOCKET_CONNECT_CHANNEL))
    assert all(m["scope"]["resumed"] for m in resumed)
    assert len({m["reply_channel"] for m in resumed}) == 10
    assert app.stats.websocket_redispatched == 10
    assert app.stats.protocol_sends_delayed >= 1 and app.stats.protocol_sends_failed == 0
    assert not any(m.get("code") == 1013 for c in clients for m in c.sent)
    for client in clients:
        client.task.cancel()  # type: ignore[attr-defined]
    await app.affinity.stop()


async def test_output_of_a_worker_that_is_not_the_owner_is_dropped() -> None:
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    old, new = "worker.a!x", "worker.b!y"
    client, message = await connect(app, layer)
    reply = message["reply_channel"]
    await layer.send(reply, {"type": "websocket.accept", "owner": old})
    await layer.send(reply, {"type": "websocket.send", "text": "ready a", "owner": old, "seq": 1})
    await client.wait_for("websocket.send")
    await app.affinity.worker_gone(old)  # declared gone, alive after all
    await layer.receive(WEBSOCKET_CONNECT_CHANNEL)
    # the old one goes on talking while the connection is resumed, and after
    await layer.send(reply, {"type": "websocket.send", "text": "late a", "owner": old, "seq": 2})
    await layer.send(reply, {"type": "websocket.accept", "owner": new})
    await layer.send(reply, {"type": "websocket.send", "text": "from b", "owner": new, "seq": 1})
    await layer.send(reply, {"type": "websocket.send", "text": "later a", "owner": old, "seq": 3})
    await layer.send(reply, {"type": "websocket.send", "text": "b again", "owner": new, "seq": 2})
    async with asyncio.timeout(5):
        await client.wait_for("websocket.send", 3)
    texts = [m["text"] for m in client.sent if m["type"] == "websocket.send"]
    assert texts == ["ready a", "from b", "b again"]
    assert [m["type"] for m in client.sent].count("websocket.accept") == 1
    assert app.stats.websocket_output_not_owner == 2
    client.task.cancel()  # type: ignore[attr-defined]
    await app.affinity.stop()


async def test_a_stalled_server_gives_workers_the_stall_back() -> None:
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer, heartbeat_timeout_seconds=1.0)
    affinity = app.affinity
    await affinity.start()
    loop = asyncio.get_running_loop()
    affinity.heartbeat({"worker": "w.a!1", "connections": []})
    heard = affinity._last_heard["w.a!1"]
    assert not affinity.stalled(0.1)  # a late wake-up within the period's slack
    assert affinity._last_heard["w.a!1"] == heard
    assert affinity.stalled(1.5)
    assert affinity._last_heard["w.a!1"] == pytest.approx(heard + 1.5 + 0.5)
    assert app.stats.server_stalls == 1
    assert affinity._last_heard["w.a!1"] > loop.time()  # not judged on resume
    # a loop late at every sweep: only the lag is credited, so a dead worker is still judged
    heard = affinity._last_heard["w.a!1"]
    assert affinity.stalled(0.6)
    assert affinity._last_heard["w.a!1"] == pytest.approx(heard + 0.6)
    assert not affinity.stalled(0.0)
    assert affinity.stalled(0.6)  # a new run of stalls: the grace again
    assert affinity._last_heard["w.a!1"] == pytest.approx(heard + 0.6 + 0.6 + 0.5)
    assert app.stats.server_stalls == 3
    await affinity.stop()


async def test_output_read_from_its_owner_is_a_sign_of_life_heartbeats_are_the_gap() -> None:
    """Heartbeats queue behind a worker's output in the server's inbox: output read counts
    as hearing from the worker (no judgement of the server's own reading lag), while the
    gap statistic stays the heartbeats'."""
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer, heartbeat_timeout_seconds=5.0)
    affinity = app.affinity
    owner, stranger = "worker.a!x", "worker.z!q"
    client, message = await connect(app, layer)
    reply = message["reply_channel"]
    await layer.send(reply, {"type": "websocket.accept", "owner": owner})
    await client.wait_for("websocket.accept")
    affinity.heartbeat({"worker": owner, "connections": [reply]})
    affinity._last_heard[owner] -= 3.0  # as if its last heartbeat had been read 3 s ago
    beat = affinity._last_beat[owner]
    await layer.send(reply, {"type": "websocket.send", "text": "hi", "owner": owner, "seq": 1})
    await client.wait_for("websocket.send")
    loop = asyncio.get_running_loop()
    assert loop.time() - affinity._last_heard[owner] < 1.0  # heard from just now
    assert affinity._last_beat[owner] == beat  # not a heartbeat
    # output of a worker that is not the owner is no sign of anyone's life here
    await layer.send(reply, {"type": "websocket.send", "text": "?", "owner": stranger, "seq": 1})
    await layer.send(reply, {"type": "websocket.send", "text": "ok", "owner": owner, "seq": 2})
    await client.wait_for("websocket.send", 2)
    assert stranger not in affinity._last_heard
    assert app.stats.websocket_output_not_owner == 1
    await affinity.worker_gone(owner)
    assert owner not in affinity._last_heard and owner not in affinity._last_beat
    client.task.cancel()  # type: ignore[attr-defined]
    await app.affinity.stop()
