"""The worker's half of connection affinity (issue 6): heartbeats to each interface server's
control channel listing the connections it holds, and the hand-back of its WebSockets on a
graceful stop. In process, on the in-memory layer; the test plays the interface server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support.waiting import WAIT
from towpath.cli import main
from towpath.consumers import AsyncWebsocketConsumer
from towpath.consumers.messages import reply
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import asgi_app, message_consumer, route
from towpath.worker import Worker, WorkerConfigError
from towpath.worker.beats import EARLY_HEARTBEAT_SPACING

INTERVAL = 0.05
Message = dict[str, Any]


class Room(AsyncWebsocketConsumer):
    """Joins ``room``; relays ``room.say`` to its client; records its disconnects."""

    groups = ["room"]
    seen: list[Message] = []
    frames: list[str | None] = []
    names: list[str] = []
    scopes: list[dict[str, Any]] = []

    async def connect(self) -> None:
        Room.names.append(self.channel_name)
        Room.scopes.append(dict(self.scope))
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        Room.frames.append(text_data)
        if text_data == "close":
            await self.close(4000)

    async def room_say(self, event: Message) -> None:
        await self.send(text_data=event["text"])

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        Room.seen.append(message)
        await super().websocket_disconnect(message)


class Gate:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    made = InMemoryChannelLayer()
    Room.seen, Room.frames, Room.names, Room.scopes = [], [], [], []
    yield made
    unregister_channel_layer("default")
    await made.close()


def routes(gate: Gate) -> list[Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        gate.started.set()
        await gate.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def job(message: Message) -> None:
        gate.started.set()
        await gate.release.wait()
        await reply(message, 200, "done by a message consumer")

    return [
        route("http.request", message_consumer(job), path=r"^/job$"),
        route("http.request", asgi_app(app)),
        route("websocket.connect", Room),
    ]


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    try:
        yield task
    finally:
        worker.stop()
        async with asyncio.timeout(WAIT):
            await task


async def connect(layer: InMemoryChannelLayer, control: str, **scope: Any) -> str:
    """Send a ``websocket.connect`` as the interface server does; return its reply channel."""
    reply_channel = await layer.new_channel("interface")
    message = {
        "type": "websocket.connect",
        "reply_channel": reply_channel,
        "control_channel": control,
        "scope": {"type": "websocket", "path": "/ws", "headers": [], **scope},
        "order": 0,
    }
    await layer.send("websocket.connect", message)
    return reply_channel


async def request(layer: InMemoryChannelLayer, control: str, path: str = "/") -> str:
    reply_channel = await layer.new_channel("interface")
    message = {
        "type": "http.request",
        "reply_channel": reply_channel,
        "request_channel": f"http.request.body.{reply_channel[-8:]}",
        "control_channel": control,
        "scope": {"type": "http", "method": "GET", "path": path, "headers": []},
        "body": b"",
        "more_body": False,
    }
    await layer.send("http.request", message)
    return reply_channel


async def heartbeat(layer: InMemoryChannelLayer, control: str, worker: Worker) -> list[str]:
    message = await layer.receive(control)
    assert message["type"] == "towpath.heartbeat"
    assert message["worker"] == worker.process_channel
    return sorted(message["connections"])


async def test_heartbeats_list_owned_websockets_and_http_requests_in_flight(
    layer: InMemoryChannelLayer,
) -> None:
    gate = Gate()
    worker = Worker(layer, routes(gate), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    control = await layer.new_channel("interface")
    async with running(worker), asyncio.timeout(WAIT):
        ws = await connect(layer, control)
        accept = await layer.receive(ws)
        assert accept["type"] == "websocket.accept"
        assert accept["owner"] == worker.process_channel
        assert await heartbeat(layer, control, worker) == [ws]

        http = await request(layer, control)
        await gate.started.wait()
        while (listed := await heartbeat(layer, control, worker)) == [ws]:
            pass  # at most one heartbeat computed before the request started
        assert listed == sorted([ws, http])

        gate.release.set()
        assert (await layer.receive(http))["status"] == 200
        assert (await layer.receive(http))["body"] == b"done"
        after = [await heartbeat(layer, control, worker) for _ in range(3)]
        if after[0] != [ws]:  # computed before the response completed
            assert after[0] == sorted([ws, http])
        assert after[1:] == [[ws], [ws]]


async def test_message_consumers_http_requests_are_listed_while_they_run(
    layer: InMemoryChannelLayer,
) -> None:
    gate = Gate()
    worker = Worker(layer, routes(gate), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    control = await layer.new_channel("interface")
    async with running(worker), asyncio.timeout(WAIT):
        http = await request(layer, control, "/job")
        await gate.started.wait()
        assert await heartbeat(layer, control, worker) == [http]
        gate.release.set()
        assert (await layer.receive(http))["status"] == 200
        ws = await connect(layer, control)
        assert (await layer.receive(ws))["type"] == "websocket.accept"
        while (listed := await heartbeat(layer, control, worker)) != [ws]:
            assert http in listed  # sent before the consumer returned
        assert await heartbeat(layer, control, worker) == [ws]


async def test_a_request_taken_is_listed_at_once_and_early_heartbeats_are_coalesced(
    layer: InMemoryChannelLayer,
) -> None:
    """Issue 17, item 8: a request is listed in a heartbeat as soon as it is taken (a worker
    killed before its next interval leaves its server a request to answer 503, not to wait
    for ``--http-timeout`` on), but not one heartbeat per request: the requests taken while an
    early heartbeat waits for its spacing go out together in the next one."""
    gate = Gate()
    interval = 2.0
    worker = Worker(layer, routes(gate), heartbeat_interval=interval, handback_timeout=0.5)
    control = await layer.new_channel("interface")
    loop = asyncio.get_running_loop()
    async with running(worker), asyncio.timeout(WAIT):
        started = loop.time()
        first = await request(layer, control)
        assert await heartbeat(layer, control, worker) == [first]
        first_listed = loop.time()
        assert first_listed - started < interval / 2  # not the interval's heartbeat
        # ASGI apps and message consumers alike, taken while the next early one must wait
        more = [await request(layer, control, "/job" if n % 2 else "/") for n in range(6)]
        beats = [await heartbeat(layer, control, worker)]
        assert loop.time() - first_listed >= interval * EARLY_HEARTBEAT_SPACING
        while beats[-1] != sorted([first, *more]):
            beats.append(await heartbeat(layer, control, worker))
        assert len(beats) <= 2, beats  # six requests, not six heartbeats
        gate.release.set()
        for reply_channel in (first, *more):
            assert (await layer.receive(reply_channel))["status"] == 200


async def test_each_server_gets_its_own_heartbeat_and_closed_websockets_drop_out(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    first, second = await layer.new_channel("interface"), await layer.new_channel("interface")
    async with running(worker), asyncio.timeout(WAIT):
        a, b = await connect(layer, first), await connect(layer, second)
        c = await connect(layer, first)
        for ws in (a, b, c):
            assert (await layer.receive(ws))["type"] == "websocket.accept"
        assert await heartbeat(layer, first, worker) == sorted([a, c])
        assert await heartbeat(layer, second, worker) == [b]
        # the consumer closes c itself: no longer listed
        close = {"type": "websocket.receive", "reply_channel": c, "order": 1, "text": "close"}
        await layer.send(worker.process_channel, close)
        assert (await layer.receive(c)) == {"type": "websocket.close", "code": 4000}
        while (listed := await heartbeat(layer, first, worker)) != [a]:
            assert listed == sorted([a, c])
        # the server finishes the close handshake and says so
        gone = {"type": "websocket.disconnect", "reply_channel": c, "order": 2, "code": 4000}
        await layer.send(worker.process_channel, gone)


async def test_graceful_stop_hands_websockets_back_instead_of_closing_them(
    layer: InMemoryChannelLayer,
) -> None:
    """The test plays the interface server and the successor's cut (docs/affinity.md)."""
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL)
    control = await layer.new_channel("interface")
    run = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
        ws = await connect(layer, control)
        assert (await layer.receive(ws))["type"] == "websocket.accept"
        await layer.group_send("room", {"type": "room.say", "text": "before"})
        before = await layer.receive(ws)
        # its worker and a number increasing per worker: the server writes a repeat once
        assert before.pop("owner") == worker.process_channel and isinstance(before["seq"], int)
        seq = before.pop("seq")
        assert before == {"type": "websocket.send", "text": "before"}
        (name,) = Room.names

        worker.stop()
        assert await layer.receive(ws) == {
            "type": "towpath.handback",
            "worker": worker.process_channel,
            "channel": name,  # the consumer's: its successor cuts over from it
        }
        assert worker.stats["handbacks_sent"] == 1 and worker.heartbeats() == {}
        # a frame the server sent before it read the handback is still handled here; the
        # server's end-of-frames names it
        late = {"type": "websocket.receive", "reply_channel": ws, "order": 1, "text": "late"}
        end = {"type": "towpath.handback.end", "reply_channel": ws, "order": 1}
        await layer.send(worker.process_channel, end)
        await layer.send(worker.process_channel, late)
        # until its successor's cut the instance stays in its groups and relays them
        await layer.group_send("room", {"type": "room.say", "text": "during"})
        during = await layer.receive(ws)
        assert during["seq"] > seq and during["owner"] == worker.process_channel
        assert {k: during[k] for k in ("type", "text")} == {
            "type": "websocket.send",
            "text": "during",
        }
        await layer.group_add("successor", name)
        await layer.group_send("successor", {"type": "towpath.cut", "cut": "successor"})
        await layer.group_send("room", {"type": "room.say", "text": "after the cut"})
        await run
        assert Room.frames == ["late"]
        assert Room.seen == [{"type": "websocket.disconnect", "code": 1012, "handed_back": True}]
        # no websocket.close and nothing after the cut: the released notice is next
        assert await layer.receive(ws) == {
            "type": "towpath.released",
            "worker": worker.process_channel,
            "order": 1,
        }
        assert worker.connections == {} and worker.stats["handbacks_released"] == 1
        # the instance left its groups: a broadcast no longer reaches its channel
        await layer.group_send("room", {"type": "room.say", "text": "later"})
        await layer.send(name, {"type": "sentinel"})
        while (message := await layer.receive(name))["type"] != "sentinel":
            assert message["text"] == "after the cut"  # sent before it left


async def test_a_handed_back_instance_ends_alone_without_its_servers_word(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL, handback_timeout=0.2)
    control = await layer.new_channel("interface")
    async with running(worker) as run, asyncio.timeout(WAIT):
        ws = await connect(layer, control)
        assert (await layer.receive(ws))["type"] == "websocket.accept"
        worker.stop()
        assert (await layer.receive(ws))["type"] == "towpath.handback"
        await run  # no end of frames, no cut: each wait ends after the handback timeout
        assert (await layer.receive(ws))["type"] == "towpath.released"
        assert Room.seen == [{"type": "websocket.disconnect", "code": 1012, "handed_back": True}]


async def test_a_resumed_connect_shows_in_the_scope(layer: InMemoryChannelLayer) -> None:
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    control = await layer.new_channel("interface")
    async with running(worker), asyncio.timeout(WAIT):
        ws = await connect(layer, control, resumed=True)
        accept = await layer.receive(ws)
        assert accept["type"] == "websocket.accept"
        assert accept["owner"] == worker.process_channel
        assert Room.scopes[0]["resumed"] is True


async def test_connections_without_a_control_channel_get_no_heartbeat(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    async with running(worker), asyncio.timeout(WAIT):
        reply_channel = await layer.new_channel("interface")
        message = {
            "type": "websocket.connect",
            "reply_channel": reply_channel,
            "scope": {"type": "websocket", "path": "/ws", "headers": []},
            "order": 0,
        }
        await layer.send("websocket.connect", message)
        assert (await layer.receive(reply_channel))["type"] == "websocket.accept"
        assert worker.heartbeats() == {}


def test_heartbeat_interval_is_checked() -> None:
    layer = InMemoryChannelLayer()
    with pytest.raises(WorkerConfigError, match="heartbeat_interval must be > 0"):
        Worker(layer, routes(Gate()), heartbeat_interval=0)
    result = CliRunner().invoke(main, ["runworker", "--help"])
    assert "--heartbeat-interval" in result.output
    result = CliRunner().invoke(main, ["runserver", "--heartbeat-interval", "0"])
    assert result.exit_code == 2 and "--heartbeat-interval" in result.output


async def test_heartbeats_report_the_last_client_frame_the_app_took(
    layer: InMemoryChannelLayer,
) -> None:
    worker = Worker(layer, routes(Gate()), heartbeat_interval=INTERVAL, handback_timeout=0.5)
    control = await layer.new_channel("interface")
    async with running(worker), asyncio.timeout(WAIT):
        ws = await connect(layer, control)
        assert (await layer.receive(ws))["type"] == "websocket.accept"
        for order in (1, 2, 3):
            frame = {"type": "websocket.receive", "reply_channel": ws, "order": order, "text": "x"}
            await layer.send(worker.process_channel, frame)
        while True:  # until a heartbeat computed after the app took all three
            message = await layer.receive(control)
            if message.get("orders", {}).get(ws) == 3:
                break
            assert message.get("orders", {}).get(ws, 0) in (0, 1, 2, 3)
        assert message["connections"] == [ws]
