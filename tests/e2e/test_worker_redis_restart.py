"""A Redis restart under real processes: ``towpath serve --settings`` and one ``towpath
runworker`` on a real ``redis-server`` that is stopped and started again on the same port.
During the outage the server answers 503 itself (docs/protocol.md, 6: "the layer unreachable"),
the worker neither dies, nor spins, nor floods its log; afterwards both serve again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.commands import runworker
from tests.support.waiting import WAIT
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import RedisServer, RedisServerFactory

#: seconds a command waits for an unreachable Redis: bounds the outage 503
RETRY_TIMEOUT = 1.0
#: the outage window over which the worker's CPU time is measured
WINDOW = 1.0
#: CPU seconds the worker may burn in that window (a spinning loop burns about all of it)
CPU_LIMIT = 0.3
#: outage log lines that would be a flood (back-off keeps it to a few a second)
FLOOD = 50
LAYER_503 = "Service Unavailable: the channel layer is unreachable"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (fields 14 and 15; the name may hold spaces)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def answered_again(http: httpx.AsyncClient) -> httpx.Response:
    """Poll until a request is answered by the worker; the last answer otherwise."""
    while True:
        response = await http.get("/hello/again")
        if response.status_code == 200:
            return response
        await asyncio.sleep(0.1)  # polling interval


def outage_lines(lines: list[str]) -> list[str]:
    return [
        line
        for line in lines
        if "unreachable" in line or "lost the channel layer" in line or "retrying" in line
    ]


async def restart_redis_under_load(
    factory: RedisServerFactory, directory: Path
) -> tuple[ServeProcess, list[str]]:
    """The scenario: serve + one worker answer; Redis stops (a request gets the server's 503,
    neither process spins); Redis starts again on its port; requests are answered again; both
    stop with status 0. Returns the worker and its stderr lines from the outage on."""
    redis: RedisServer = factory()
    config = {"hosts": [redis.url], "retry_timeout": RETRY_TIMEOUT}
    settings = directory / "restart_settings.py"
    settings.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
        f"'CONFIG': {config!r}, 'ROUTING': 'tests.support.workerapp:routes'}}}}\n"
    )
    async with (
        towpath_serve(
            "--settings", str(settings), "--port", "0", "--http-timeout", "10", cwd=directory
        ) as served,
        runworker("--settings", str(settings), tag="R", cwd=directory) as worker,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        response = await http.get("/hello/before")
        assert (response.status_code, response.text) == (200, "hello before from R")
        before_outage = len(worker.stderr_lines)
        pids = {"worker": worker.process.pid, "server": served.process.pid}

        await asyncio.to_thread(redis.stop)
        started = time.monotonic()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        response = await http.get("/hello/outage")
        answered_in = time.monotonic() - started
        assert (response.status_code, response.text) == (503, LAYER_503)
        assert answered_in < RETRY_TIMEOUT + 5, answered_in
        left = WINDOW - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)  # the rest of the measurement window, not a wait for state
        window = time.monotonic() - started
        for name, pid in pids.items():
            used = cpu_seconds(pid) - cpu_before[name]
            assert used < CPU_LIMIT, f"the {name} used {used:.2f} s CPU in {window:.2f} s"

        port = redis.port
        await asyncio.to_thread(redis.start)
        assert redis.port == port
        async with asyncio.timeout(WAIT):
            response = await answered_again(http)
        assert response.text == "hello again from R"

        assert served.process.returncode is None, served.output()
        assert worker.process.returncode is None, worker.output()
        for process in (worker, served):
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                assert await process.wait() == 0, process.output()
        return worker, worker.stderr_lines[before_outage:]


@pytest.mark.redis
@pytest.mark.slow
async def test_serve_and_worker_survive_a_redis_restart(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    worker, during = await restart_redis_under_load(redis_server_factory, tmp_path)
    lines = outage_lines(during)
    # noticed, and not a flood: a retry loop without back-off logs thousands of lines a second
    assert 1 <= len(lines) < FLOOD, worker.output()


@pytest.mark.redis
@pytest.mark.slow
async def test_a_redis_restart_is_one_line_in_the_worker_log(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    _, during = await restart_redis_under_load(redis_server_factory, tmp_path)
    assert len(outage_lines(during)) == 1, "".join(during)
    assert len([line for line in during if "reachable again after" in line]) == 1, "".join(during)
