"""Issue 17, item 8: a request whose worker dies is answered 503 once the worker is found gone,
not after ``--http-timeout``.

Real processes: a ``redis-server`` on a free port, ``towpath serve`` (heartbeat timeout 1 s,
HTTP timeout 30 s) and ``towpath runworker``. The worker takes a request whose consumer never
answers (``/slow?s=3600``) and lists it to the server at once, in an early heartbeat (it logs
that at debug level); then it is killed with SIGKILL. The client gets 503 with ``Retry-After``
within the heartbeat timeout and a margin, far below the HTTP timeout (before: 30 s, the HTTP
timeout); a worker started next serves the next request (``docs/affinity.md``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.commands import ENV, runworker, write_settings
from tests.support.waiting import WAIT
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

HEARTBEAT_TIMEOUT = 1.0
HTTP_TIMEOUT = 30.0
#: the sweep (a quarter of the timeout), reading the control channel, a loaded machine
MARGIN = 2.0
SERVE_ARGS = (
    "--port",
    "0",
    "--heartbeat-timeout",
    str(HEARTBEAT_TIMEOUT),
    "--http-timeout",
    str(HTTP_TIMEOUT),
)


async def test_a_request_of_a_killed_worker_is_answered_503_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )
    async with (
        towpath_serve("--settings", str(settings), *SERVE_ARGS, cwd=tmp_path, env=ENV) as served,
        httpx.AsyncClient(base_url=served.url, timeout=HTTP_TIMEOUT + WAIT) as http,
    ):
        async with runworker(
            "--settings", str(settings), "--log-level", "debug", tag="A", cwd=tmp_path
        ) as worker:
            request = asyncio.create_task(http.get("/slow", params={"s": "3600"}))
            async with asyncio.timeout(WAIT):
                await worker.wait_for_stderr("slow started on A")
                # listed at once, not at the next heartbeat interval
                await worker.wait_for_stderr("Early heartbeat to")
            worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await worker.wait()
            response = await request
            took = time.monotonic() - killed
        assert response.status_code == 503, response.text
        assert response.text == "Service Unavailable: the worker handling it was lost"
        assert response.headers["retry-after"] == "1"
        assert took < HEARTBEAT_TIMEOUT + MARGIN, took
        print(f"503 {took:.2f} s after the worker's SIGKILL (HTTP timeout {HTTP_TIMEOUT:g} s)")

        async with runworker("--settings", str(settings), tag="B", cwd=tmp_path):
            async with asyncio.timeout(WAIT):
                response = await http.get("/hello/again")
            assert response.status_code == 200
            assert response.text == "hello again from B"

        async with asyncio.timeout(WAIT):
            forwarding = (await served.logged_stats())["forwarding"]
        assert forwarding["workers_lost"] == 1, served.output()
        assert forwarding["http_503_worker_lost"] == 1, served.output()
        assert forwarding["http_503_timeout"] == 0, served.output()
