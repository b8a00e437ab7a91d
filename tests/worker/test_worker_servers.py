"""Interface servers' liveness, seen from a worker (docs/protocol.md, section 10).

``Servers`` is sans-IO: its clocks are injected here. Then the two ends in process on the
in-memory layer: the forwarding app answers heartbeats (``towpath.heartbeat.ack``, naming what
it no longer holds), and a worker ends what its server no longer holds, and starts a stale
connect only once its server answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.forwarding import answering
from tests.support.waiting import WAIT, until
from towpath.consumers import AsyncWebsocketConsumer
from towpath.interface.forwarding import ForwardingApp
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.outages import RECONNECT_GRACE
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.worker import Worker
from towpath.worker.servers import FORGET_SECONDS, RUNNING_PATIENCE, Servers, Verdict

Message = dict[str, Any]
#: the heartbeat timeout the in-process "servers" announce
SERVER_TIMEOUT = 0.5
CONTROL = "interface.aaaaaaaaaaaa!0000000000000000"


class Clocks:
    """A monotonic and a wall clock that move only when told."""

    def __init__(self) -> None:
        self.monotonic = 100.0
        self.wall = 1_000_000.0

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def servers(clocks: Clocks) -> Servers:
    return Servers(clock=lambda: clocks.monotonic, wall=lambda: clocks.wall)


def message(clocks: Clocks, age: float = 0.0, timeout: float | None = 5.0, **keys: Any) -> Message:
    """A request as a server stamps it, sent ``age`` seconds ago (by the wall clock)."""
    stamped: Message = {"control_channel": CONTROL, "sent_at": clocks.wall - age, **keys}
    if timeout is not None:
        stamped["heartbeat_timeout"] = timeout
    return stamped


# -- verdicts -----------------------------------------------------------------------------------


def test_a_fresh_message_starts_a_stale_one_asks_first(clocks: Clocks, servers: Servers) -> None:
    assert servers.admit(message(clocks, age=1.0))[0] is Verdict.START
    assert servers.admit(message(clocks, age=6.0))[0] is Verdict.PROBE
    server = servers.get(CONTROL)
    assert server is not None
    servers.acked(CONTROL, {})
    clocks.advance(4.0)
    # heard from within its timeout: a stale message starts without asking
    assert servers.admit(message(clocks, age=60.0))[0] is Verdict.START


def test_a_passed_deadline_drops_even_without_heartbeats(clocks: Clocks, servers: Servers) -> None:
    late = message(clocks, timeout=None, deadline=clocks.wall - 0.5)
    assert servers.admit(late)[0] is Verdict.LATE
    # a server that says nothing of heartbeats is never asked nor judged
    assert servers.admit(message(clocks, age=600.0, timeout=None))[0] is Verdict.START
    assert servers.admit({"type": "http.request"}) == (Verdict.START, None)


def test_deadlines_are_read_on_the_servers_clock(clocks: Clocks, servers: Servers) -> None:
    """A server whose clock is 100 s behind ours: its deadline 5 s from its now has not
    passed, though our clock is past it."""
    servers.admit(message(clocks))
    servers.acked(CONTROL, {"time": clocks.wall - 100.0})
    theirs = clocks.wall - 100.0
    assert servers.admit(message(clocks, deadline=theirs + 5.0))[0] is Verdict.START
    assert servers.admit(message(clocks, deadline=theirs - 1.0))[0] is Verdict.LATE


# -- gone ---------------------------------------------------------------------------------------


async def test_a_server_asked_and_silent_for_its_timeout_is_gone(
    clocks: Clocks, servers: Servers
) -> None:
    verdict, server = servers.admit(message(clocks, age=10.0, timeout=1.0))
    assert verdict is Verdict.PROBE and server is not None
    answered = servers.ask(server)
    assert [s.control for s in servers.probes()] == [CONTROL]
    servers.sent(CONTROL, ok=True)
    clocks.advance(0.9)
    assert servers.sweep() == []
    clocks.advance(0.2)
    assert servers.sweep() == [server]
    assert server.gone and answered.result() is False
    # its stale messages are dropped; a fresh one asks again (it may only have been slow)
    assert servers.admit(message(clocks, age=5.0, timeout=1.0))[0] is Verdict.GONE
    assert servers.admit(message(clocks, age=0.0, timeout=1.0))[0] is Verdict.PROBE


async def test_an_answer_keeps_a_server_alive_and_starts_what_waited(
    clocks: Clocks, servers: Servers
) -> None:
    _, server = servers.admit(message(clocks, age=10.0, timeout=1.0))
    assert server is not None
    answered = servers.ask(server)
    servers.sent(CONTROL, ok=True)
    clocks.advance(0.5)
    servers.acked(CONTROL, {})
    assert answered.result() is True
    clocks.advance(5.0)
    assert servers.sweep() == []  # nothing asked since the answer


def test_no_server_is_blamed_for_the_workers_own_delays(clocks: Clocks, servers: Servers) -> None:
    servers.admit(message(clocks, timeout=1.0))
    servers.sent(CONTROL, ok=True)
    clocks.advance(1.5)
    # the round ran 1 s late (a stalled loop): answers may be waiting unread
    assert servers.sweep(lag=1.0) == []
    clocks.advance(1.1)
    assert [s.control for s in servers.sweep()] == [CONTROL]


def test_no_server_is_blamed_while_the_workers_layer_is_down_or_just_back(
    clocks: Clocks, servers: Servers
) -> None:
    """Issue 17, item 7: a worker that cannot reach its layer cannot hear any server; after
    the outage each server has its timeout plus the reconnect grace to answer again."""
    servers.admit(message(clocks, timeout=1.0))
    servers.sent(CONTROL, ok=True)  # then the layer went down: no answer can come
    for _ in range(5):
        clocks.advance(1.0)
        assert servers.sweep(outage_seen=clocks.monotonic) == []
    back = clocks.monotonic  # the last look that saw the outage
    clocks.advance(1.0 + RECONNECT_GRACE)
    assert servers.sweep(outage_seen=back) == []
    clocks.advance(0.1)
    assert [s.control for s in servers.sweep(outage_seen=back)] == [CONTROL]
    # a running worker's patience counts the same way
    servers.acked(CONTROL, {})
    servers.sent(CONTROL, ok=True)
    back = clocks.monotonic
    clocks.advance(RUNNING_PATIENCE + RECONNECT_GRACE)
    assert servers.sweep(stopping=False, outage_seen=back) == []
    clocks.advance(0.1)
    assert [s.control for s in servers.sweep(stopping=False, outage_seen=back)] == [CONTROL]


def test_a_heartbeat_the_layer_refused_asked_nobody(clocks: Clocks, servers: Servers) -> None:
    servers.admit(message(clocks, timeout=1.0))
    servers.sent(CONTROL, ok=False)
    clocks.advance(10.0)
    assert servers.sweep() == []


def test_servers_unseen_for_long_are_forgotten(clocks: Clocks, servers: Servers) -> None:
    servers.admit(message(clocks))
    clocks.advance(FORGET_SECONDS + 1)
    servers.sweep()
    assert servers.get(CONTROL) is None


# -- the server's answer -----------------------------------------------------------------------


async def test_the_forwarding_app_answers_heartbeats_naming_what_it_no_longer_holds() -> None:
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer)
    control = await app.affinity.start()
    worker = await layer.new_channel("worker")
    try:
        gone = "interface.aaaaaaaaaaaa!1111111111111111"
        heartbeat = {"type": "towpath.heartbeat", "worker": worker, "connections": [gone]}
        await layer.send(control, heartbeat)
        async with asyncio.timeout(WAIT):
            ack = await layer.receive(worker)
        assert ack["type"] == "towpath.heartbeat.ack" and ack["control_channel"] == control
        assert ack["unknown"] == [gone] and isinstance(ack["time"], float)
        stamp = app.affinity.stamp(30.0)
        assert stamp["heartbeat_timeout"] == app.affinity.heartbeat_timeout
        assert stamp["deadline"] == pytest.approx(stamp["sent_at"] + 30.0)
        assert "deadline" not in app.affinity.stamp(None)
    finally:
        await app.affinity.stop()
        await layer.close()


# -- the worker's side, in process -------------------------------------------------------------


class Room(AsyncWebsocketConsumer):
    groups = ["room"]
    events: list[str] = []

    async def connect(self) -> None:
        Room.events.append("connect")
        await self.accept()

    async def disconnect(self, code: int) -> None:
        Room.events.append(f"disconnect {code}")


@pytest.fixture
async def running() -> AsyncIterator[tuple[InMemoryChannelLayer, Worker]]:
    layer = InMemoryChannelLayer()
    Room.events = []
    worker = Worker(layer, [route("websocket.connect", Room)], heartbeat_interval=0.05)
    task = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.started()
    yield layer, worker
    # no server answers any more: the stop hands back, then ends what is left once the
    # server misses its (short) heartbeat timeout
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    unregister_channel_layer("default")
    await layer.close()


async def send_connect(layer: InMemoryChannelLayer, control: str, age: float) -> str:
    reply = await layer.new_channel("interface")
    await layer.send(
        "websocket.connect",
        {
            "type": "websocket.connect",
            "reply_channel": reply,
            "control_channel": control,
            "scope": {"type": "websocket", "path": "/", "headers": []},
            "order": 0,
            "sent_at": time.time() - age,
            "heartbeat_timeout": SERVER_TIMEOUT,
        },
    )
    return reply


async def test_a_stale_connect_starts_once_its_server_answers(
    running: tuple[InMemoryChannelLayer, Worker],
) -> None:
    layer, worker = running
    control = await layer.new_channel("interface")
    reply = await send_connect(layer, control, age=30.0)
    async with asyncio.timeout(WAIT):
        probe = await layer.receive(control)  # asked at once, not at the next interval
    assert probe["type"] == "towpath.heartbeat" and probe["connections"] == []
    assert Room.events == []  # not started before the answer
    async with answering(layer, control):
        await layer.send(
            probe["worker"], {"type": "towpath.heartbeat.ack", "control_channel": control}
        )
        async with asyncio.timeout(WAIT):
            assert (await layer.receive(reply))["type"] == "websocket.accept"
        assert Room.events == ["connect"]
    assert worker.stats["dropped_server_gone"] == 0


async def test_what_the_server_no_longer_holds_is_ended(
    running: tuple[InMemoryChannelLayer, Worker],
) -> None:
    layer, worker = running
    control = await layer.new_channel("interface")
    reply = await send_connect(layer, control, age=0.0)
    async with asyncio.timeout(WAIT):
        assert (await layer.receive(reply))["type"] == "websocket.accept"
    async with answering(layer, control, unknown=(reply,)) as heartbeats:
        await until(lambda: not worker.connections, "the instance to end on its own")
    assert heartbeats[0]["connections"] == [reply]
    assert Room.events == ["connect", "disconnect 1006"]
    assert worker.stats["ended_unknown"] == 1 and worker.stats["servers_lost"] == 0


async def test_an_abandoned_request_wakes_an_app_waiting_for_its_body() -> None:
    from towpath.worker.host import ConnectionClosed, HostedHTTP

    layer = InMemoryChannelLayer()
    reply = await layer.new_channel("interface")
    message = {
        "type": "http.request",
        "reply_channel": reply,
        "request_channel": "http.request.body.000000000000000000000000",
        "control_channel": CONTROL,
        "body": b"first",
        "more_body": True,
    }
    host = HostedHTTP(layer, message)
    assert (await host.receive())["body"] == b"first"
    waiting = asyncio.ensure_future(host.receive())  # the rest of the body, which never comes
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its first wait
    assert host._abandoned is not None and not waiting.done()  # waiting on the request channel
    assert host.abandon() and not host.abandon()
    async with asyncio.timeout(WAIT):
        assert await waiting == {"type": "http.disconnect"}
    with pytest.raises(ConnectionClosed):
        await host.send({"type": "http.response.start", "status": 200})
    assert await host.receive() == {"type": "http.disconnect"}
    await layer.close()


def test_a_running_worker_is_patient_with_a_slow_server(clocks: Clocks, servers: Servers) -> None:
    """Not stopping and nothing waiting on it: a server is gone only after
    ``RUNNING_PATIENCE`` times its timeout (a loaded server must not lose its sockets'
    instances); stopping, after its timeout."""
    servers.admit(message(clocks, timeout=1.0))
    servers.sent(CONTROL, ok=True)
    clocks.advance(1.5)
    assert servers.sweep(stopping=False) == []
    clocks.advance(RUNNING_PATIENCE - 1.4)
    assert [s.control for s in servers.sweep(stopping=False)] == [CONTROL]
    servers.acked(CONTROL, {})
    servers.sent(CONTROL, ok=True)
    clocks.advance(1.1)
    assert [s.control for s in servers.sweep(stopping=True)] == [CONTROL]
