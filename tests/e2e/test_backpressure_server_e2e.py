"""Issue 18, server side, with real processes: a ``redis-server`` on a free port, ``towpath
serve --settings`` and ``towpath runworker`` (``tests/support/backpressure_app.py``: every WebSocket
joins the group ``bp`` and is sent ``ready <channel>``), and ``websockets`` clients.

* 1,000 clients leaving at once: every ``websocket.disconnect`` notice reaches the worker
  though its process channel (where a connection's owner is sent them) holds 2: they wait for
  room, so every consumer leaves the group: 0 memberships left.
* A worker holding 300 connections SIGKILLed: all 300 are resumed by the other worker (each
  client gets a second ``ready``) though ``websocket.connect`` holds 50; none is closed 1013.
* ``towpath serve`` stopped (SIGSTOP) for 1.5 s with a heartbeat timeout of 1 s, then
  continued: it says it was stalled, no worker is declared gone, no client gets a second
  ``ready``, and group events still reach every client.
* A client that stops reading (``tests/support/raw_ws_client.py``: a raw socket with a 4 KiB receive
  buffer) while a publisher sends to the group at a steady rate: if it reads again before its
  unread output reaches ``--ws-output-limit`` it gets every event, in order; if it stays
  stopped it is closed 1013 (or cut when it does not answer the close), its consumer leaves the
  group, the server counts it in ``websocket_1013_slow``, and every other client gets every
  event with no gap.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.support.backpressure import (
    LONG,
    clients,
    forwarding_stats,
    write_settings,
    zcard,
)
from tests.support.commands import ENV, runworker
from tests.support.raw_ws_client import RawWebSocket
from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HEARTBEAT_TIMEOUT = 1.0


async def zscore(redis: RedisServer, key: str, member: str) -> bytes | None:
    """ZSCORE over a raw connection (RESP): the score, or None when ``member`` is not in it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", redis.port)
    try:
        parts = [b"ZSCORE", key.encode(), member.encode()]
        writer.write(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        line = await reader.readline()
        if line.startswith(b"$-1"):
            return None
        assert line.startswith(b"$"), line
        return (await reader.readline()).rstrip(b"\r\n")
    finally:
        writer.close()
        await writer.wait_closed()


def serve_args(settings: Path, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> tuple[str, ...]:
    return (
        "--settings",
        str(settings),
        "--port",
        "0",
        "--heartbeat-timeout",
        str(heartbeat_timeout),
    )


@pytest.mark.timeout(240)
async def test_a_thousand_clients_leaving_at_once_leave_no_membership(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # the disconnect notices go to the worker's process channel (the owner): 2 fit at once
    settings = write_settings(tmp_path, redis_server.url, {"worker.*": 2})
    # what is tested is the disconnect notices: the worker is not to be judged while it takes
    # 1,000 connects on a loaded machine (a worker slow past a 1 s timeout is declared gone
    # and its connections resumed: issue 18's worker side, not landed yet)
    args = serve_args(settings, heartbeat_timeout=10.0)
    async with (
        towpath_serve(*args, cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), tag="A", cwd=tmp_path) as worker,
    ):
        async with clients(served.ws_url, 1000, batch=100) as made:
            assert await zcard(redis_server, "asgi:group:bp") == 1000
            await asyncio.gather(*(c.ws.close() for c in made))  # all at once
        async with asyncio.timeout(LONG):
            # Redis's state: no event to wait on
            while (left := await zcard(redis_server, "asgi:group:bp")) > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert left == 0
        async with asyncio.timeout(WAIT):
            worker_stats = (await worker.logged_stats())["worker"]
        # every consumer ended on its disconnect notice, none because a heartbeat ack said
        # its connection was unknown here (the fallback for a lost notice)
        assert worker_stats["ended_unknown"] == 0, worker_stats
        stats = await forwarding_stats(served)
        assert stats["websocket_disconnects"] == 1000
        assert stats["protocol_sends_delayed"] > 0, stats  # the channel was full, they waited
        assert stats["protocol_sends_failed"] == 0, stats


@pytest.mark.timeout(240)
async def test_every_connection_of_a_killed_worker_is_resumed_none_refused(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(tmp_path, redis_server.url, {"websocket.connect": 50})
    async with (
        towpath_serve(*serve_args(settings), cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), tag="A", cwd=tmp_path) as doomed,
        clients(served.ws_url, 300, batch=25) as made,  # all on A
        runworker("--settings", str(settings), tag="B", cwd=tmp_path),
    ):
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        async with asyncio.timeout(LONG):
            await asyncio.gather(*(c.wait_until(lambda c: c.readies >= 2) for c in made))
        assert [c.close_code for c in made] == [None] * 300
        assert all(c.readies == 2 for c in made)
        # each new consumer took its dead predecessor's place in the group (lost_from): one
        # member per client, not two (the dead ones would stay for group_expiry)
        assert await zcard(redis_server, "asgi:group:bp") == 300
        stats = await forwarding_stats(served)
        assert stats["workers_lost"] == 1, stats
        assert stats["websocket_redispatched"] == 300, stats
        assert stats["websocket_resume_timeouts"] == 0, stats
        assert stats["protocol_sends_failed"] == 0, stats
        assert stats["protocol_sends_delayed"] > 0, stats  # the burst did overflow the channel


@pytest.mark.timeout(180)
async def test_a_server_stopped_for_a_while_declares_no_worker_gone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(tmp_path, redis_server.url, {})
    layer = RedisChannelLayer(hosts=[redis_server.url])
    async with (
        towpath_serve(*serve_args(settings), cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), tag="A", cwd=tmp_path),
        runworker("--settings", str(settings), tag="B", cwd=tmp_path),
        clients(served.ws_url, 100) as made,
    ):
        await layer.group_send("bp", {"type": "bp.event", "text": "before"})
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(c.wait_until(lambda c: "before" in c.frames) for c in made))
        served.send_signal(signal.SIGSTOP)
        try:
            # heartbeats and events pile up in its inbox meanwhile
            for n in range(15):
                await layer.group_send("bp", {"type": "bp.event", "text": f"stopped {n}"})
                await asyncio.sleep(0.1)  # the scenario: a server stopped 1.5 s
        finally:
            served.send_signal(signal.SIGCONT)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(c.wait_until(lambda c: "stopped 14" in c.frames) for c in made))
        # two more heartbeat timeouts of normal life after the stall
        for n in range(2):
            await layer.group_send("bp", {"type": "bp.event", "text": f"after {n}"})
            async with asyncio.timeout(WAIT):
                await asyncio.gather(
                    *(c.wait_until(lambda c, n=n: f"after {n}" in c.frames) for c in made)
                )
            await asyncio.sleep(HEARTBEAT_TIMEOUT)  # the scenario: time for a wrong judgement
        stats = await forwarding_stats(served)
        assert stats["workers_lost"] == 0, served.output()
        assert stats["websocket_redispatched"] == 0, stats
        assert [c.readies for c in made] == [1] * 100
        assert [c.close_code for c in made] == [None] * 100
        assert stats["server_stalls"] >= 1, stats
        assert "This server was stalled for" in served.output()
    await layer.close()


#: the slow-client tests: the events published (a frame is 4 bytes more) and the publisher's
#: pace, seconds between two events (the scenario's steady rate: 200 a second)
EVENT_BYTES = 8000
EVENT_INTERVAL = 0.005


def event_text(n: int) -> str:
    return f"{n:06d} ".ljust(EVENT_BYTES, "e")


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("resumes", "limit"),
    # reading again in time: a limit above what the socket buffers take on loopback (2 to
    # 3 MB were seen), so that the server holds some of what the client has not read
    [(True, 4 * 1024 * 1024), (False, 256 * 1024)],
    ids=["reads-again-in-time", "stays-stopped"],
)
async def test_a_client_that_stops_reading_costs_only_itself(
    tmp_path: Path, redis_server: RedisServer, resumes: bool, limit: int
) -> None:
    settings = write_settings(tmp_path, redis_server.url, {})
    layer = RedisChannelLayer(hosts=[redis_server.url])
    # a worker slow to beat on a loaded machine is not what is tested
    args = (*serve_args(settings, heartbeat_timeout=10.0), "--ws-output-limit", str(limit))
    published = 0

    async def publish(count: int) -> None:
        nonlocal published
        for _ in range(count):
            await layer.group_send("bp", {"type": "bp.event", "text": event_text(published)})
            published += 1
            await asyncio.sleep(EVENT_INTERVAL)

    async with (
        towpath_serve(*args, cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), tag="A", cwd=tmp_path) as worker,
        clients(served.ws_url, 3) as normal,
    ):
        slow = await RawWebSocket.connect(served.host, served.port, "/bp/")
        try:
            async with asyncio.timeout(WAIT):
                await slow.read(lambda c: bool(c.texts))
            ready, channel = slow.texts[0].split()
            assert ready == "ready"
            assert await zscore(redis_server, "asgi:group:bp", channel) is not None
            # from here the slow client reads nothing
            if resumes:
                # less than the limit while it does not read
                count = limit // (EVENT_BYTES + 4) - 1
                await publish(count)
                async with asyncio.timeout(LONG):
                    await asyncio.gather(
                        *(c.wait_until(lambda c: len(c.frames) > count) for c in normal)
                    )
                    await slow.read(lambda c: len(c.texts) > count)
                assert slow.texts[1:] == [event_text(n) for n in range(count)]
                assert not slow.ended
                assert await zscore(redis_server, "asgi:group:bp", channel) is not None
            else:
                # until its consumer left the group (its disconnect reached the worker)
                async with asyncio.timeout(LONG):
                    while await zscore(redis_server, "asgi:group:bp", channel) is not None:
                        await publish(10)
                assert published * EVENT_BYTES > limit
                await publish(10)  # the group goes on without it
                async with asyncio.timeout(WAIT):  # it reads again: what it was sent, then
                    await slow.read(lambda c: False)  # the close (or the cut, if too late)
                assert slow.close is not None or slow.reset, slow
                if slow.close is not None:
                    assert (slow.close.code, slow.close.reason) == (1013, "client too slow")
                assert slow.texts[1:] == [event_text(n) for n in range(len(slow.texts) - 1)]
                assert len(slow.texts) - 1 < published
        finally:
            slow.shut()
        await layer.group_send("bp", {"type": "bp.event", "text": "end"})
        async with asyncio.timeout(LONG):
            await asyncio.gather(*(c.wait_until(lambda c: "end" in c.frames) for c in normal))
        expected = [event_text(n) for n in range(published)] + ["end"]
        for client in normal:  # every event, in order, none missing
            assert client.frames[1:] == expected
            assert client.close_code is None
        stats = await forwarding_stats(served)
        assert stats["websocket_1013_slow"] == (0 if resumes else 1), stats
        assert stats["websocket_1013"] == 0, stats
        if not resumes:
            line = await served.wait_for_stderr("client too slow")
            assert f"{limit} bytes" in line and "WARNING" in line
            async with asyncio.timeout(WAIT):
                worker_stats = (await worker.logged_stats())["worker"]
            assert worker_stats["ended_unknown"] == 0, worker_stats
    await layer.close()
