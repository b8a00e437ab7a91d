"""Issue 18, worker side, in process: the slow-client policy (a consumer's output waits while
its reply channel is full, up to ``send_timeout``; then that one client is closed 1013 on its
server's control channel and the consumer gets its disconnect and leaves its groups), the
bounded per-instance frame queue, and groups left by a consumer that fails. On the in-memory
layer; the test plays the interface server. Real processes: test_backpressure_worker_e2e.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from towpath.consumers import AsyncWebsocketConsumer
from towpath.interface.affinity import CLOSE_EVENT
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.worker import Worker, WorkerConfigError
from towpath.worker.sendwait import SendWait
from towpath.worker.servers import Servers

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
Message = dict[str, Any]
#: reply channels the test makes ("reply" prefix) hold this many messages unread
REPLY_CAPACITY = 3


class Fan(AsyncWebsocketConsumer):
    """Joins ``fan``; relays ``fan.event`` to its client; records disconnects; a client frame
    ``block`` makes the next handler wait on ``gate``; an event ``boom`` raises."""

    groups = ["fan"]
    disconnects: list[int] = []
    gate: asyncio.Event | None = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "block" and Fan.gate is not None:
            await Fan.gate.wait()

    async def fan_event(self, event: Message) -> None:
        if event["text"] == "boom":
            raise RuntimeError("boom")
        await self.send(text_data=event["text"])

    async def disconnect(self, code: int) -> None:
        Fan.disconnects.append(code)


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    made = InMemoryChannelLayer(channel_capacity={"reply*": REPLY_CAPACITY})
    Fan.disconnects, Fan.gate = [], None
    yield made
    unregister_channel_layer("default")
    await made.close()


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    try:
        yield
    finally:
        worker.stop(force=True)
        async with asyncio.timeout(WAIT):
            await task


async def connect(layer: InMemoryChannelLayer, control: str) -> str:
    reply_channel = await layer.new_channel("reply")
    await layer.send(
        "websocket.connect",
        {
            "type": "websocket.connect",
            "reply_channel": reply_channel,
            "control_channel": control,
            "scope": {"type": "websocket", "path": "/ws", "headers": []},
            "order": 0,
        },
    )
    accept = await layer.receive(reply_channel)
    assert accept["type"] == "websocket.accept"
    return reply_channel


async def control_event(layer: InMemoryChannelLayer, control: str, kind: str) -> Message:
    """The next message of ``kind`` on the control channel (heartbeats skipped)."""
    while True:
        message = await layer.receive(control)
        if message["type"] == kind:
            return message


async def until(condition: Callable[[], object]) -> None:
    """Wait for ``condition()`` (bounded by the test's ``asyncio.timeout``)."""
    while not condition():  # noqa: ASYNC110 (the worker's state: no event to wait on)
        await asyncio.sleep(0.005)


def members(layer: InMemoryChannelLayer, group: str) -> set[str]:
    return set(layer._groups.get(group, {}))


# -- the policy alone, with an injected clock --------------------------------------------------


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            await self.on_sleep()


async def test_a_full_channel_is_retried_with_capped_jittered_back_off_until_the_bound() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    fake = FakeTime()
    jitters = iter([0.0, 1.0] * 1000)
    waits = SendWait(
        2.0, initial=0.01, maximum=0.25, clock=fake.clock, sleep=fake.sleep,
        jitter=lambda: next(jitters),
    )  # fmt: skip
    await layer.send("full", {"type": "x"})
    assert not await waits.send(layer, "full", {"type": "y"})
    assert sum(fake.sleeps) == pytest.approx(2.0)  # waited the whole bound, not more
    # jittered: 0.5x then 1.5x the back-off, which doubles up to its cap
    assert fake.sleeps[:4] == pytest.approx([0.005, 0.03, 0.02, 0.12])
    assert max(fake.sleeps) <= 0.25 * 1.5
    assert len(fake.sleeps) < 20  # no busy loop
    assert waits.stats["send_waits"] == 1
    await layer.close()


async def test_a_send_goes_through_once_the_channel_is_read() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    fake = FakeTime()
    waits = SendWait(5.0, clock=fake.clock, sleep=fake.sleep)
    await layer.send("full", {"type": "first"})

    async def reader() -> None:
        if len(fake.sleeps) == 3:  # the server reads after a short while
            await layer.receive("full")

    fake.on_sleep = reader
    assert await waits.send(layer, "full", {"type": "second"})
    assert len(fake.sleeps) == 3 and fake.now - 100.0 < 5.0
    assert (await layer.receive("full"))["type"] == "second"
    # bounded per call: a later send has its own bound
    await layer.send("full", {"type": "third"})
    before = fake.now
    assert not await waits.send(layer, "full", {"type": "fourth"}, bound=0.5)
    assert fake.now - before == pytest.approx(0.5)
    assert waits.stats["send_waits"] == 2
    await layer.close()


async def test_worker_settings_are_checked(layer: InMemoryChannelLayer) -> None:
    routes = [route("websocket.connect", Fan)]
    with pytest.raises(WorkerConfigError, match="send_timeout"):
        Worker(layer, routes, send_timeout=0)
    with pytest.raises(WorkerConfigError, match="max_pending"):
        Worker(layer, routes, max_pending=0)


# -- the worker --------------------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_1013_and_its_consumer_leaves_its_groups(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    """The stuck client's reply channel fills; its consumer's send waits ``send_timeout``,
    then the close goes on the control channel (its reply channel is full), the consumer's
    ``disconnect(1013)`` runs and its membership is gone; the other client gets every event."""
    worker = Worker(layer, [route("websocket.connect", Fan)], send_timeout=0.3)
    control = await layer.new_channel("control")
    async with running(worker), asyncio.timeout(WAIT):
        stuck = await connect(layer, control)
        reader = await connect(layer, control)
        received: list[str] = []

        async def read() -> None:
            while True:
                message = await layer.receive(reader)
                if message["type"] == "websocket.send":
                    received.append(message["text"])

        reading = asyncio.ensure_future(read())
        events = [str(n) for n in range(REPLY_CAPACITY + 5)]
        with caplog.at_level(logging.WARNING, "towpath.worker"):
            for text in events:
                await layer.group_send("fan", {"type": "fan.event", "text": text})
            close = await control_event(layer, control, CLOSE_EVENT)
            assert close == {
                "type": CLOSE_EVENT,
                "worker": worker.process_channel,
                "reply_channel": stuck,
                "code": 1013,
            }
            await until(lambda: Fan.disconnects == [1013])
            await until(lambda: len(members(layer, "fan")) == 1)
        assert "Closing WebSocket" in caplog.text and "1013" in caplog.text
        await until(lambda: received == events)
        reading.cancel()
        # what the stuck client's server had read before it stalled, in order
        stuck_frames = [(await layer.receive(stuck))["text"] for _ in range(REPLY_CAPACITY)]
        assert stuck_frames == events[:REPLY_CAPACITY]
        await until(lambda: stuck not in worker.connections)  # the instance ended
    assert worker.stats["slow_clients_closed"] == 1
    assert worker.stats["closes_via_control"] == 1
    assert worker.stats["send_waits"] >= 1
    assert worker.stats["closes_failed"] == 0


async def test_a_briefly_slow_client_slows_its_consumer_and_gets_everything(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, [route("websocket.connect", Fan)], send_timeout=5.0)
    control = await layer.new_channel("control")
    async with running(worker), asyncio.timeout(WAIT):
        slow = await connect(layer, control)
        events = [str(n) for n in range(REPLY_CAPACITY * 4)]
        for text in events:
            await layer.group_send("fan", {"type": "fan.event", "text": text})
        await until(
            lambda: worker.stats["send_waits"] > 0
        )  # the consumer waits on the full channel
        got = [(await layer.receive(slow))["text"] for _ in events]
        assert got == events
        assert Fan.disconnects == []
        assert len(members(layer, "fan")) == 1
    assert worker.stats["slow_clients_closed"] == 0


async def test_a_stuck_instance_queues_a_bounded_number_of_client_frames(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, [route("websocket.connect", Fan)], max_pending=5)
    control = await layer.new_channel("control")
    Fan.gate = asyncio.Event()
    async with running(worker), asyncio.timeout(WAIT):
        stuck = await connect(layer, control)
        for order in range(1, 12):
            frame = {"type": "websocket.receive", "reply_channel": stuck, "order": order}
            await layer.send(worker.process_channel, {**frame, "text": "block"})
        close = await control_event(layer, control, CLOSE_EVENT)
        assert (close["reply_channel"], close["code"]) == (stuck, 1013)
        assert len(worker.connections[stuck].orders) <= 5
        Fan.gate.set()
        await until(lambda: Fan.disconnects == [1013])
        assert members(layer, "fan") == set()
    assert worker.stats["pending_overflows"] == 1
    assert worker.stats["slow_clients_closed"] == 1


async def test_a_consumer_that_fails_leaves_its_groups_and_its_1011_gets_through(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its reply channel full, the worker's close goes on the control channel."""
    worker = Worker(layer, [route("websocket.connect", Fan)], send_timeout=0.3)
    control = await layer.new_channel("control")
    async with running(worker), asyncio.timeout(WAIT):
        failing = await connect(layer, control)
        for n in range(REPLY_CAPACITY):  # its reply channel full: the close waits, then
            await layer.group_send("fan", {"type": "fan.event", "text": str(n)})
        with caplog.at_level(logging.ERROR, "towpath.worker"):
            await layer.group_send("fan", {"type": "fan.event", "text": "boom"})
            close = await control_event(layer, control, CLOSE_EVENT)
        assert (close["reply_channel"], close["code"]) == (failing, 1011)
        assert "boom" in caplog.text
        assert members(layer, "fan") == set()
        assert Fan.disconnects == []  # it failed: no disconnect(), but no membership left
    assert worker.stats["closes_via_control"] == 1


@pytest.mark.parametrize("outage", [False, True])
async def test_a_worker_silent_past_its_servers_timeout_ends_its_instances_before_output(
    layer: InMemoryChannelLayer, outage: bool
) -> None:
    """A blocked loop, simulated by the servers' clock jumping past the heartbeat timeout: the
    next output of a connection of that server is dropped, its instance gets 1006 and leaves
    its groups, and a 1012 close goes on the control channel (owner-checked by the server)."""
    now = [1000.0]
    worker = Worker(layer, [route("websocket.connect", Fan)], heartbeat_interval=60)
    worker.servers = Servers(clock=lambda: now[0])
    control = await layer.new_channel("control")
    async with running(worker), asyncio.timeout(WAIT):
        reply_channel = await layer.new_channel("reply")
        await layer.send(
            "websocket.connect",
            {
                "type": "websocket.connect",
                "reply_channel": reply_channel,
                "control_channel": control,
                "scope": {"type": "websocket", "path": "/ws", "headers": []},
                "order": 0,
                "heartbeat_timeout": 1.0,
                "sent_at": time.time(),
            },
        )
        assert (await layer.receive(reply_channel))["type"] == "websocket.accept"
        await layer.group_send("fan", {"type": "fan.event", "text": "before"})
        assert (await layer.receive(reply_channel))["text"] == "before"
        now[0] += 3.0  # three timeouts without a heartbeat round
        if outage:  # silent because the layer was down: nobody judges that, nothing fenced
            worker._outage_watch.saw(now[0])
            await layer.group_send("fan", {"type": "fan.event", "text": "after"})
            assert (await layer.receive(reply_channel))["text"] == "after"
            assert worker.stats["fenced"] == 0 and Fan.disconnects == []
            return
        await layer.group_send("fan", {"type": "fan.event", "text": "after"})
        close = await control_event(layer, control, CLOSE_EVENT)
        assert (close["reply_channel"], close["code"]) == (reply_channel, 1012)
        await until(lambda: Fan.disconnects == [1006])
        assert members(layer, "fan") == set()
        assert worker.stats["fenced"] == 1
        assert worker.stats["sends_dropped_closed"] == 1
        assert layer._mailbox.length(reply_channel) == 0  # "after" never went out


async def test_a_full_control_channel_does_not_hold_back_the_other_servers_heartbeats(
    layer: InMemoryChannelLayer,
) -> None:
    """Heartbeats go to every server at once; one whose control channel is full is retried
    for up to half the interval, and the others' heartbeats keep their pace meanwhile."""
    small = InMemoryChannelLayer(channel_capacity={"full*": 1})
    worker = Worker(small, [route("websocket.connect", Fan)], heartbeat_interval=0.2)
    full, free = await small.new_channel("full"), await small.new_channel("control")
    async with running(worker), asyncio.timeout(WAIT):
        for control in (full, free):
            await connect(small, control)
        await small.send(full, {"type": "filler"})  # never read: every heartbeat finds it full
        loop = asyncio.get_running_loop()
        await control_event(small, free, "towpath.heartbeat")
        started = loop.time()
        for _ in range(5):
            await control_event(small, free, "towpath.heartbeat")
        # five intervals, not five intervals plus five half-interval waits on the full one
        assert loop.time() - started < 5 * 0.2 + 0.3
        await until(lambda: worker.stats["heartbeats_failed"] >= 2)
    unregister_channel_layer("default")
    await small.close()
