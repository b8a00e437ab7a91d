"""A worker and interface servers that are gone: real ``towpath runworker`` (and ``towpath
serve``) processes over a real ``redis-server``.

A ``websocket.connect`` left in the layer by a server that has since stopped must not become a
consumer that heart-beats to nobody and holds the worker's SIGTERM for 20 s (docs/protocol.md,
section 10): the worker asks the server first and drops the connect when it does not answer; a
connect started for a server that then dies is ended once the server misses its heartbeat
timeout; a connect its server already gave up on is dropped. Each is counted in the worker's
``stats`` line and logged once per server."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.commands import runworker, write_settings
from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

Message = dict[str, Any]
#: what the dead servers of these tests said their heartbeat timeout was
SERVER_TIMEOUT = 1.0
#: the worker's heartbeat interval here
INTERVAL = "0.2"
#: a SIGTERM that waits on nothing: the process's own exit takes most of it
PROMPT_SECONDS = 3.0
GONE_LINE = "did not answer heartbeats"


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[RedisChannelLayer]:
    made = RedisChannelLayer(hosts=[redis_server.url])
    yield made
    await made.close()


def dead_control_channel() -> str:
    """The control channel of a server that stopped: a process channel nobody reads."""
    return f"interface.{secrets.token_hex(6)}!{secrets.token_hex(8)}"


async def leave_connect(layer: RedisChannelLayer, *, age: float, **keys: Any) -> str:
    """Put a ``websocket.connect`` in the layer as a server ``age`` seconds ago left it, for
    ``/chat/``; its reply channel (this test reads it)."""
    reply = await layer.new_channel("interface")
    sent_at = time.time() - age
    message = {
        "type": "websocket.connect",
        "reply_channel": reply,
        "control_channel": dead_control_channel(),
        "scope": {"type": "websocket", "path": "/chat/", "headers": [], "subprotocols": []},
        "order": 0,
        "sent_at": sent_at,
        "heartbeat_timeout": SERVER_TIMEOUT,
        "deadline": sent_at + 120,
        **keys,
    }
    await layer.send("websocket.connect", message)
    return reply


async def nothing_on(layer: RedisChannelLayer, channel: str) -> None:
    """``channel`` holds nothing now: a sentinel sent behind is what comes out first."""
    await layer.send(channel, {"type": "sentinel"})
    async with asyncio.timeout(WAIT):
        assert (await layer.receive(channel))["type"] == "sentinel"


async def stop_promptly(worker: ServeProcess) -> dict[str, int]:
    """SIGTERM the worker: it exits 0 within ``PROMPT_SECONDS``; its worker counters."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        status = await worker.wait()
    took = time.monotonic() - started
    assert status == 0, worker.output()
    assert took < PROMPT_SECONDS, f"stopping took {took:.1f} s\n{worker.output()}"
    (line,) = [line for line in worker.stderr_lines if " stats {" in line]
    counters: dict[str, int] = json.loads(line.split(" stats ", 1)[1])["worker"]
    return counters


def worker_args(settings: Path) -> tuple[str, ...]:
    return ("--settings", str(settings), "--heartbeat-interval", INTERVAL)


async def test_a_stale_connect_of_a_stopped_server_is_never_started(
    layer: RedisChannelLayer, settings: Path, tmp_path: Path
) -> None:
    # waited 10 s in the layer: longer than its server's heartbeat timeout, so the worker asks
    # the server before starting it; nobody answers
    reply = await leave_connect(layer, age=10.0)
    async with runworker(*worker_args(settings), tag="L", cwd=tmp_path) as worker:
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr(GONE_LINE)
        assert "ended 0 connection(s)" in line
        await nothing_on(layer, reply)  # no accept: the consumer never ran
        counters = await stop_promptly(worker)
    assert counters["dropped_server_gone"] == 1 and counters["servers_lost"] == 1
    assert counters["ended_server_gone"] == 0


async def test_a_fresh_connect_of_a_server_that_died_is_ended_at_its_timeout(
    layer: RedisChannelLayer, settings: Path, tmp_path: Path
) -> None:
    # sent just now, so started at once; its server never answers a heartbeat
    reply = await leave_connect(layer, age=0.0)
    async with runworker(*worker_args(settings), tag="L", cwd=tmp_path) as worker:
        async with asyncio.timeout(WAIT):
            accept = await layer.receive(reply)
        assert accept["type"] == "websocket.accept"
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr(GONE_LINE)
        assert "ended 1 connection(s)" in line
        counters = await stop_promptly(worker)
    assert counters["ended_server_gone"] == 1 and counters["servers_lost"] == 1
    assert counters["handbacks_sent"] == 0  # ended before the stop: nothing to hand back


async def test_a_connect_its_server_gave_up_on_is_dropped(
    layer: RedisChannelLayer, settings: Path, tmp_path: Path
) -> None:
    reply = await leave_connect(layer, age=0.0, deadline=time.time() - 1)
    async with runworker(*worker_args(settings), tag="L", cwd=tmp_path) as worker:
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr("had given up on")
        assert "websocket.connect" in line
        await nothing_on(layer, reply)
        counters = await stop_promptly(worker)
    assert counters["dropped_late"] == 1 and counters["servers_lost"] == 0


async def test_sigterm_after_the_server_was_killed_does_not_wait_for_it(
    settings: Path, tmp_path: Path
) -> None:
    """The real scenario: serve + worker, a WebSocket open, the server SIGKILLed, the worker
    SIGTERMed: it hands the socket back, nobody answers, and once the server misses its
    heartbeat timeout the consumer ends and the worker exits (before: 20 s)."""
    async with (
        towpath_serve(
            "--settings", str(settings), "--port", "0", "--heartbeat-timeout", "1", cwd=tmp_path
        ) as served,
        runworker(*worker_args(settings), tag="K", cwd=tmp_path) as worker,
        connect(served.ws_url + "/chat/", open_timeout=WAIT) as socket,
    ):
        await socket.send("hello")
        async with asyncio.timeout(WAIT):
            assert await socket.recv() == "hello via K"
        served.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await served.wait()
        counters = await stop_promptly(worker)
    assert counters["handbacks_sent"] == 1
    assert counters["ended_server_gone"] == 1 and counters["servers_lost"] == 1
