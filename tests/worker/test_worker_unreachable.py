"""``towpath runworker`` whose channel layer cannot be reached: real processes, real
``redis-server``, a RabbitMQ URL to a port nobody listens on, an IPC store that cannot be made.

The worker says the layer is unreachable (naming it) instead of claiming to listen, says so
once, says when it is back and only then that it listens; a SIGTERM while it waits (nothing in
flight) or while its Redis is down ends it at once with status 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.support.commands import runserver, runworker, write_settings
from tests.support.waiting import WAIT
from towpath.testing.processes import ServeProcess
from towpath.testing.services import RedisServerFactory, free_port

pytestmark = pytest.mark.slow

UNREACHABLE = "is unreachable"
LISTENING = "worker listening on"
#: a stop with nothing in flight; the process's own start and exit take most of it
PROMPT_SECONDS = 3.0


async def stop_promptly(worker: ServeProcess) -> float:
    """SIGTERM ``worker``: its status must be 0; returns how long it took to exit."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        status = await worker.wait()
    took = time.monotonic() - started
    assert status == 0, worker.output()
    return took


def redis_settings(directory: Path, url: str) -> Path:
    return write_settings(directory, "towpath.layers.redis.RedisChannelLayer", {"hosts": [url]})


@pytest.mark.redis
async def test_a_worker_says_its_redis_is_unreachable_then_back(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    redis = redis_server_factory()
    redis.stop()  # the port stays this server's: start() brings it back there
    settings = redis_settings(tmp_path, redis.url)
    async with runworker("--settings", str(settings), tag="U", cwd=tmp_path, ready=False) as worker:
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr(UNREACHABLE)
        assert f"redis://127.0.0.1:{redis.port}" in line and "not listening on" in line
        assert LISTENING not in worker.output()

        await asyncio.to_thread(redis.start)
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr(LISTENING)
        log = worker.output()
        assert "answers again" in log
        assert log.count(UNREACHABLE) == 1, log  # once per outage, however many retries
        assert await stop_promptly(worker) < PROMPT_SECONDS


@pytest.mark.redis
async def test_a_worker_exits_at_once_when_its_redis_never_answered(tmp_path: Path) -> None:
    settings = redis_settings(tmp_path, f"redis://127.0.0.1:{free_port()}")
    async with runworker("--settings", str(settings), tag="U", cwd=tmp_path, ready=False) as worker:
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr(UNREACHABLE)
        # before: 22.7 s (the layer's reader retried for retry_timeout, then close waited for it)
        assert await stop_promptly(worker) < PROMPT_SECONDS
        assert LISTENING not in worker.output()
        assert "stats {" in worker.output()


@pytest.mark.redis
async def test_a_worker_whose_redis_dies_stops_at_once(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    redis = redis_server_factory()
    settings = redis_settings(tmp_path, redis.url)
    async with runworker("--settings", str(settings), tag="U", cwd=tmp_path, ready=False) as worker:
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr(LISTENING)
        redis.kill()
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("unreachable")  # the layer's own line: its readers
        assert await stop_promptly(worker) < PROMPT_SECONDS


async def test_a_worker_says_its_rabbitmq_is_unreachable_and_exits_at_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    settings = write_settings(
        tmp_path, "towpath.layers.rabbitmq.RabbitMQChannelLayer", {"url": url}
    )
    async with runworker("--settings", str(settings), tag="U", cwd=tmp_path, ready=False) as worker:
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr(UNREACHABLE)
        assert f"@127.0.0.1:{port}/" in line
        # before: no signal handled while the process channel was being made; a traceback and
        # status 1 once the layer gave up after its retry_timeout
        assert await stop_promptly(worker) < PROMPT_SECONDS
        assert LISTENING not in worker.output() and "Traceback" not in worker.output()


async def test_an_ipc_store_that_cannot_be_made_is_a_start_up_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    settings = write_settings(
        tmp_path, "towpath.layers.ipc.IPCChannelLayer", {"directory": str(blocked)}
    )
    async with runworker("--settings", str(settings), tag="U", cwd=tmp_path, ready=False) as worker:
        async with asyncio.timeout(WAIT):
            assert await worker.wait() == 3, worker.output()
        assert (
            f"Error: Channel layer 'default': IPC layer: directory='{blocked}' is not a directory;"
            in (worker.output())
        )
        assert "Traceback" not in worker.output()


@pytest.mark.redis
async def test_runserver_waiting_for_its_redis_stops_at_once(tmp_path: Path) -> None:
    settings = redis_settings(tmp_path, f"redis://127.0.0.1:{free_port()}")
    async with runserver("--settings", str(settings), cwd=tmp_path, ready=False) as served:
        async with asyncio.timeout(WAIT):
            await served.wait_for_stderr(UNREACHABLE)
        assert await stop_promptly(served) < PROMPT_SECONDS
        assert served.stdout_lines == []  # it never said it was serving
