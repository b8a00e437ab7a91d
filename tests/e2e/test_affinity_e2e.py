"""Connection affinity end to end, with real processes over a real Redis: WebSocket clients in
a group chat stay connected while the worker that owns their connections stops gracefully
(hand-back) or is killed (declared gone after the heartbeat timeout); their connections are
re-dispatched to the remaining worker as resumed connects, and the chat goes on."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat import clients, each_hears_itself, everyone_hears_everyone
from tests.support.commands import ENV, runworker, write_settings
from tests.support.waiting import WAIT
from towpath.testing.processes import towpath_serve

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


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
