"""Connection affinity end to end, with real processes over a real Redis: WebSocket clients in
a group chat stay connected while the worker that owns their connections stops gracefully
(hand-back) or is killed (declared gone after the heartbeat timeout); their connections are
re-dispatched to the remaining worker as resumed connects, and the chat goes on."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cli.test_cli_worker import ENV, WAIT, runworker, write_settings
from towpath.testing.processes import towpath_serve

CLIENTS = 6
pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


@contextlib.asynccontextmanager
async def clients(url: str) -> AsyncIterator[list[ClientConnection]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(connect(url, open_timeout=WAIT)) for _ in range(CLIENTS)
        ]


async def each_hears_itself(sockets: list[ClientConnection], tag: str) -> int:
    """Until every client's own message comes back to it: its connection has a live consumer
    in the group again (after a re-dispatch). A message sent to a killed owner before it is
    declared gone is lost (at most once): that client tries again. Returns the attempts lost."""
    lost = 0
    for index, socket in enumerate(sockets):
        for attempt in range(20):
            text = f"{tag}-{index}-{attempt}"
            await socket.send(text)
            try:
                async with asyncio.timeout(1.0):
                    while not str(await socket.recv()).startswith(f"{text} via "):
                        pass
                break
            except TimeoutError:
                lost += 1
        else:
            raise AssertionError(f"client {index} never heard itself again")
    return lost


async def everyone_hears_everyone(sockets: list[ClientConnection], tag: str) -> set[str]:
    """Each client sends one message; every client receives all of them. Returns the workers
    (the `via` tags) that relayed them."""
    sent = [f"{tag}-{index}" for index in range(len(sockets))]
    for socket, text in zip(sockets, sent, strict=True):
        await socket.send(text)
    relays: set[str] = set()
    for socket in sockets:
        heard: set[str] = set()
        while heard != set(sent):
            text, _, relay = str(await socket.recv()).partition(" via ")
            if text in sent:
                heard.add(text)
                relays.add(relay)
    return relays


async def test_clients_stay_connected_through_a_handback_and_a_killed_worker(
    settings: Path, tmp_path: Path
) -> None:
    serve_args = ("--settings", str(settings), "--port", "0", "--heartbeat-timeout", "1")
    worker_args = ("--settings", str(settings), "--heartbeat-interval", "0.2")
    async with (
        towpath_serve(*serve_args, cwd=tmp_path, env=ENV) as served,
        runworker(*worker_args, tag="A", cwd=tmp_path) as worker_a,
    ):
        url = served.urls[0].replace("http://", "ws://") + "/chat/"
        async with clients(url) as sockets, asyncio.timeout(4 * WAIT):
            assert await everyone_hears_everyone(sockets, "one") == {"A"}
            async with runworker(*worker_args, tag="B", cwd=tmp_path) as worker_b:
                # A stops gracefully: it hands its connections back, B takes them
                worker_a.send_signal(signal.SIGTERM)
                assert await worker_a.wait() == 0
                # a handback loses nothing: frames sent meanwhile are held, then released
                assert await each_hears_itself(sockets, "two") == 0
                assert await everyone_hears_everyone(sockets, "three") == {"B"}
                async with runworker(*worker_args, tag="C", cwd=tmp_path):
                    # B is killed: after the heartbeat timeout C takes its connections
                    worker_b.send_signal(signal.SIGKILL)
                    await worker_b.wait()
                    await each_hears_itself(sockets, "four")
                    assert await everyone_hears_everyone(sockets, "five") == {"C"}
            # nobody was disconnected on the way
            assert all(socket.close_code is None for socket in sockets)
