"""Issue 18, worker side, with real processes: a ``redis-server`` on a free port, ``towpath
serve --settings``, ``towpath runworker`` (``tests/support/backpressure_app.py``: every WebSocket
joins the group ``bp``, is sent ``ready <channel>`` and then each ``bp.event``) and ``websockets``
clients.

* A burst of 1,000 WebSocket connects at once, the default heartbeat timeout: no worker is
  declared gone, every client is accepted exactly once, heartbeats reach the server well
  within the timeout.
* ``towpath serve`` stopped (SIGSTOP) ~1.5 s while group events flow into reply channels that
  hold 5: the sends wait for room, no client is closed, every event reaches every client, no
  consumer dies.
* ``towpath serve`` SIGKILLed while sends wait: they end once the worker finds the server gone
  (its short heartbeat timeout), and every consumer leaves its groups.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.backpressure import (
    LONG,
    Client,
    clients,
    forwarding_stats,
    write_settings,
    zcard,
)
from tests.support.commands import ENV, runworker
from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: ``towpath serve``'s default ``--heartbeat-timeout``, in ms
DEFAULT_HEARTBEAT_TIMEOUT_MS = 5000


@asynccontextmanager
async def stack(
    tmp_path: Path,
    redis_server: RedisServer,
    capacities: dict[str, int],
    heartbeat_timeout: float | None = None,
) -> AsyncIterator[tuple[ServeProcess, ServeProcess, RedisChannelLayer]]:
    """``towpath serve`` (its default heartbeat timeout unless given), one ``runworker`` and a
    layer of the test's own, over ``redis_server`` with these channel capacities."""
    settings = write_settings(tmp_path, redis_server.url, capacities)
    serve = ["--settings", str(settings), "--port", "0"]
    if heartbeat_timeout is not None:
        serve += ["--heartbeat-timeout", str(heartbeat_timeout)]
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        async with (
            towpath_serve(*serve, cwd=tmp_path, env=ENV) as served,
            runworker("--settings", str(settings), tag="A", cwd=tmp_path) as worker,
        ):
            yield served, worker, layer
    finally:
        await layer.close()


async def worker_stats(worker: ServeProcess) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        stats: dict[str, Any] = (await worker.logged_stats())["worker"]
    return stats


async def broadcast(layer: RedisChannelLayer, made: list[Client], texts: list[str]) -> None:
    """``bp.event`` each of ``texts`` to the group; wait until every client has the last."""
    for text in texts:
        await layer.group_send("bp", {"type": "bp.event", "text": text})
    async with asyncio.timeout(LONG):
        await asyncio.gather(*(c.wait_until(lambda c: texts[-1] in c.frames) for c in made))


def assert_no_consumer_died(worker: ServeProcess) -> None:
    log = worker.output()
    assert "Traceback" not in log and "failed on" not in log, log


def events_of(client: Client) -> list[str]:
    return [frame for frame in client.frames if not frame.startswith("ready ")]


@pytest.mark.timeout(240)
async def test_a_burst_of_a_thousand_connects_declares_no_worker_gone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    made: list[Client] = []
    # websocket.connect holds the whole burst (the default 100 would deny most with 503)
    async with stack(tmp_path, redis_server, {"websocket.connect": 1000}) as (
        served,
        worker,
        layer,
    ):
        url = f"{served.ws_url}/bp/"
        try:
            async with asyncio.timeout(LONG):
                sockets = await asyncio.gather(
                    *(connect(url, open_timeout=LONG, max_queue=None) for _ in range(1000))
                )
                made += [Client(ws) for ws in sockets]
                await asyncio.gather(*(c.wait_until(lambda c: c.readies) for c in made))
            # and busy with output too: 20 events to each of the 1,000
            await broadcast(layer, made, [f"event {n}" for n in range(20)])
            stats = await forwarding_stats(served)
            assert stats["workers_lost"] == 0, stats
            assert stats["websocket_redispatched"] == 0, stats
            assert stats["heartbeat_gap_max_ms"] < DEFAULT_HEARTBEAT_TIMEOUT_MS, stats
            assert [c.readies for c in made] == [1] * 1000
            assert [c.close_code for c in made] == [None] * 1000
            assert all(events_of(c) == [f"event {n}" for n in range(20)] for c in made)
            counters = await worker_stats(worker)
            assert counters["servers_lost"] == 0 and counters["ended_server_gone"] == 0, counters
        finally:
            await asyncio.gather(*(c.ws.close() for c in made), return_exceptions=True)
            for client in made:
                client.task.cancel()


@pytest.mark.timeout(180)
async def test_a_paused_server_delays_sends_and_loses_no_client_nor_event(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    texts = [f"paused {n}" for n in range(15)]
    # reply channels hold 5: the events of the pause overflow them
    async with (
        stack(tmp_path, redis_server, {"interface.*": 5}) as (served, worker, layer),
        clients(served.ws_url, 50) as made,
    ):
        served.send_signal(signal.SIGSTOP)
        try:
            for text in texts:
                await layer.group_send("bp", {"type": "bp.event", "text": text})
                await asyncio.sleep(0.1)  # the scenario: a server stopped 1.5 s
            delayed = (await worker_stats(worker))["sends_delayed"]
        finally:
            served.send_signal(signal.SIGCONT)
        assert delayed > 0
        async with asyncio.timeout(LONG):
            await asyncio.gather(*(c.wait_until(lambda c: texts[-1] in c.frames) for c in made))
        # events go on until the worker says the server takes messages again (a send went
        # through at once, none having waited for a second): the same episode until then
        after: list[str] = []
        async with asyncio.timeout(WAIT):
            while not any("takes messages again" in line for line in worker.stderr_lines):
                after.append(f"after {len(after)}")
                await broadcast(layer, made, after[-1:])
        assert [events_of(c) for c in made] == [[*texts, *after]] * 50
        assert [c.close_code for c in made] == [None] * 50
        assert [c.readies for c in made] == [1] * 50
        counters = await worker_stats(worker)
        assert counters["sends_delayed"] >= delayed and counters["servers_lost"] == 0, counters
        assert (await forwarding_stats(served))["workers_lost"] == 0
        assert_no_consumer_died(worker)
        assert sum("are full" in line for line in worker.stderr_lines) == 1, worker.output()
        assert await zcard(redis_server, "asgi:group:bp") == 50


@pytest.mark.timeout(180)
async def test_a_killed_server_ends_the_waiting_sends_and_its_consumers_leave_their_groups(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        stack(tmp_path, redis_server, {"interface.*": 2}, 0.5) as (served, worker, layer),
        clients(served.ws_url, 20),
    ):
        assert await zcard(redis_server, "asgi:group:bp") == 20
        served.send_signal(signal.SIGSTOP)
        for n in range(5):
            await layer.group_send("bp", {"type": "bp.event", "text": f"event {n}"})
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("are full")  # the sends wait
        served.send_signal(signal.SIGKILL)
        await served.wait()
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("it is gone")
            # Redis's state: no event to wait on
            while (left := await zcard(redis_server, "asgi:group:bp")) > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert left == 0
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("ended with its connection")
        counters = await worker_stats(worker)
        assert counters["servers_lost"] == 1 and counters["ended_server_gone"] == 20, counters
        assert counters["sends_delayed"] >= 20, counters
        assert_no_consumer_died(worker)
