"""Issue 17, item 7: a Redis outage longer than ``--heartbeat-timeout`` declares nobody gone.

Real processes: a ``redis-server`` on a free port, ``towpath serve`` and two ``towpath
runworker`` over it, four ``websockets`` clients on an echo consumer. Redis is killed with
SIGKILL (it comes back empty: nothing is persisted) and started again on the same port after
four heartbeat timeouts. Neither side may take the silence for a death while its own layer
connection is down: no worker is declared gone (so no WebSocket is resumed elsewhere while
its consumer still runs), no server is declared gone by a worker, no client is closed, and
every frame (those sent before, during and after the outage) is echoed once, in order
(``docs/affinity.md``, "A layer outage").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.commands import ENV, runworker, write_settings
from tests.support.waiting import WAIT
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]

CLIENTS = 4
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0
#: how long Redis stays down: past three heartbeat timeouts (a running worker's patience with
#: a silent server), and under the layer's ``retry_timeout`` (10 s), so that what is sent
#: meanwhile waits for Redis instead of failing
OUTAGE = 4 * HEARTBEAT_TIMEOUT
#: frames each client sends before, during and after the outage
BEFORE, DURING, AFTER = 20, 10, 20
SERVE_ARGS = ("--port", "0", "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT))
WORKER_ARGS = ("--heartbeat-interval", str(HEARTBEAT_INTERVAL))


class Echoer:
    """One client: sends ``index:seq`` and records the seqs echoed back."""

    def __init__(self, index: int, socket: ClientConnection) -> None:
        self.index = index
        self.socket = socket
        self.sent = 0
        self.heard: list[int] = []
        self.via: set[str] = set()
        self.changed = asyncio.Event()

    async def send(self, count: int) -> None:
        for _ in range(count):
            await self.socket.send(f"{self.index}:{self.sent}")
            self.sent += 1

    async def listen(self) -> None:
        async for text in self.socket:
            message, _, via = str(text).partition(" via ")
            self.heard.append(int(message.partition(":")[2]))
            self.via.add(via)
            self.changed.set()

    async def all_heard(self) -> None:
        """Until as many echoes came back as frames were sent (bounded by the caller)."""
        while len(self.heard) < self.sent:
            self.changed.clear()
            await self.changed.wait()


async def test_a_redis_outage_declares_nobody_gone_and_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )
    async with (
        towpath_serve("--settings", str(settings), *SERVE_ARGS, cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), *WORKER_ARGS, tag="A", cwd=tmp_path) as worker_a,
        runworker("--settings", str(settings), *WORKER_ARGS, tag="B", cwd=tmp_path) as worker_b,
        contextlib.AsyncExitStack() as stack,
    ):
        url = served.ws_url + "/echo/"
        sockets = [
            await stack.enter_async_context(connect(url, open_timeout=WAIT, max_queue=None))
            for _ in range(CLIENTS)
        ]
        clients = [Echoer(index, socket) for index, socket in enumerate(sockets)]
        listening = [asyncio.create_task(client.listen()) for client in clients]
        try:
            await asyncio.gather(*(client.send(BEFORE) for client in clients))
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*(client.all_heard() for client in clients))

            # No frame is in flight: the kill cuts no command short (one written when Redis
            # died may or may not have run, and its frame's client is closed 1013).
            redis_server.kill()
            killed = time.monotonic()
            async with asyncio.timeout(WAIT):
                await served.wait_for_stderr("unreachable")
            # sent during the outage: they wait in the server for Redis to come back
            await asyncio.gather(*(client.send(DURING) for client in clients))
            await asyncio.sleep(killed + OUTAGE - time.monotonic())  # the outage's length
            redis_server.start()  # the same port, an empty dataset
            async with asyncio.timeout(WAIT):
                await served.wait_for_stderr("reachable again")
                # the workers' fresh timeout after the outage is over: silence counts again
                await served.wait_for_stderr("judged by their heartbeats again")

            await asyncio.gather(*(client.send(AFTER) for client in clients))
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*(client.all_heard() for client in clients))
            total = BEFORE + DURING + AFTER
            for client in clients:
                assert client.socket.close_code is None, (client.index, client.socket.close_code)
                # every frame echoed once, in order, by one consumer all along
                assert client.heard == list(range(total)), (
                    f"client {client.index} heard {client.heard}\n{served.output()}"
                )
                assert len(client.via) == 1, (client.index, client.via)
        finally:
            for task in listening:
                task.cancel()

        async with asyncio.timeout(WAIT):
            forwarding = (await served.logged_stats())["forwarding"]
        assert forwarding["workers_lost"] == 0, served.output()
        assert forwarding["websocket_redispatched"] == 0, served.output()
        assert "it is gone" not in served.output()
        for worker in (worker_a, worker_b):
            async with asyncio.timeout(WAIT):
                counters = (await worker.logged_stats())["worker"]
            assert counters["servers_lost"] == 0, worker.output()
            assert counters["ended_server_gone"] == 0, worker.output()
            assert "reachable again" in worker.output()  # it saw the outage too
