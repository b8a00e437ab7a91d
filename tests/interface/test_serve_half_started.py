"""A half-started stack says so: ``towpath serve`` (decoupled) with no worker consuming, with
busy workers, and with an unreachable channel layer.

The bookkeeping (:class:`~towpath.interface.untaken.UntakenRequests`) is tested in memory with
a fake clock; the rest with real processes: a real ``redis-server`` (or the IPC layer),
``towpath serve`` and ``towpath runworker`` as subprocesses, real clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.commands import runworker, write_settings
from tests.support.waiting import WAIT
from towpath.interface.forwarding import ForwardingApp, ForwardingStats
from towpath.interface.untaken import UntakenRequests
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import free_port

NO_WORKER = "no worker is taking requests"
WAITING = "requests are waiting"
WORKER_BACK = "a worker took a request from"
#: an exit with nothing in flight; it took the Redis layer's retry_timeout (10 s) before
PROMPT_EXIT = 3.0


# -- the bookkeeping, in memory --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watcher(threshold: float = 2.0) -> tuple[UntakenRequests, ForwardingStats, Clock]:
    stats, clock = ForwardingStats(), Clock()
    return UntakenRequests(stats, threshold, clock=clock), stats, clock


def lines(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and r.levelno == level]


def test_no_worker_is_reported_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "towpath.interface.forwarding")
    untaken, stats, clock = watcher()
    untaken.sent("a", "http.request")
    clock.now += 1.9
    untaken.check()
    assert stats.untaken_requests == 0 and untaken.state == "ok"
    untaken.sent("b", "websocket.connect")
    clock.now += 0.1
    untaken.check()
    (warning,) = lines(caplog, NO_WORKER)
    assert "1 waited more than 2 s (http.request: 1)" in warning
    assert "start `towpath runworker` with the same settings" in warning
    assert stats.untaken_requests == 1 and stats.no_worker_outages == 1

    for name in "cde":
        untaken.sent(name, "http.request")
    clock.now += 2.0
    untaken.check()
    untaken.check()
    assert len(lines(caplog, NO_WORKER)) == 1  # one per outage, not one per request
    assert stats.untaken_requests == 5 and stats.no_worker_outages == 1
    (still,) = lines(caplog, "still no worker", logging.DEBUG)
    assert "5 request(s)" in still and "http.request: 4, websocket.connect: 1" in still

    untaken.taken("a")
    (back,) = lines(caplog, WORKER_BACK, logging.INFO)
    assert "http.request" in back and "none was taken for 4.0 s; 4 still waiting" in back
    assert untaken.state == "ok" and untaken.waiting == 4

    # the next outage is reported again
    for name in "bcde":
        untaken.dropped(name)
    untaken.sent("f", "http.request")
    clock.now += 2.5
    untaken.check()
    assert len(lines(caplog, NO_WORKER)) == 2 and stats.no_worker_outages == 2


def test_busy_workers_make_requests_wait_not_a_missing_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "towpath.interface.forwarding")
    untaken, stats, clock = watcher()
    untaken.listed(1)  # a worker's heartbeat lists a request it works on
    untaken.sent("a", "http.request")
    clock.now += 3.0
    untaken.check()
    untaken.check()
    assert not lines(caplog, NO_WORKER)
    (warning,) = lines(caplog, WAITING)
    assert "1 not yet taken by a worker after 2 s (http.request: 1; the oldest for 3.0 s)" in (
        warning
    )
    assert "workers work on 1 other(s) here" in warning
    assert stats.waiting_episodes == 1 and stats.untaken_requests == 1

    untaken.taken("a")
    untaken.check()
    assert lines(caplog, "requests are taken again within 2 s", logging.INFO)
    assert untaken.state == "ok"

    # every worker is gone (nothing listed any more), the requests still wait: no worker
    untaken.listed(-1)
    untaken.sent("b", "http.request")
    clock.now += 2.0
    untaken.check()
    assert len(lines(caplog, NO_WORKER)) == 1 and untaken.state == "no worker"


def test_a_worker_that_answered_lately_is_busy_not_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    untaken, _, clock = watcher()
    untaken.sent("a", "http.request")
    untaken.sent("b", "http.request")
    clock.now += 1.0
    untaken.taken("a")  # answered: a worker runs
    clock.now += 1.5
    untaken.check()
    assert lines(caplog, WAITING) and not lines(caplog, NO_WORKER)


def test_a_worker_between_two_requests_is_not_missing(caplog: pytest.LogCaptureFixture) -> None:
    """Its last request just completed (no longer listed), the next one not yet taken."""
    untaken, _, clock = watcher()
    untaken.listed(1)
    untaken.sent("queued", "http.request")
    clock.now += 2.5
    untaken.check()
    untaken.listed(-1)
    untaken.answered()
    untaken.check()
    assert not lines(caplog, NO_WORKER)
    clock.now += 2.0  # and nothing since: now it is missing
    untaken.check()
    assert lines(caplog, NO_WORKER)


def test_ended_and_resent_requests(caplog: pytest.LogCaptureFixture) -> None:
    untaken, stats, clock = watcher()
    untaken.sent("gone", "http.request")
    untaken.sent("resumed", "websocket.connect")
    clock.now += 1.5
    untaken.dropped("gone")  # the client left before any worker could take it
    untaken.sent("resumed", "websocket.connect")  # re-dispatched: it waits from now
    clock.now += 1.5
    untaken.check()
    assert stats.untaken_requests == 0 and not caplog.records
    clock.now += 0.5
    untaken.check()
    assert stats.untaken_requests == 1 and lines(caplog, "(websocket.connect: 1)")


def test_untaken_warning_must_be_positive() -> None:
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    with pytest.raises(ValueError, match="untaken_warning_seconds must be > 0"):
        ForwardingApp(layer, untaken_warning_seconds=0)
    assert ForwardingApp(layer, heartbeat_timeout_seconds=3).untaken.threshold == 3
    with pytest.raises(ValueError, match="threshold must be > 0"):
        UntakenRequests(ForwardingStats(), -1.0)


# -- real processes ----------------------------------------------------------------------------


def ipc_settings(tmp_path: Path) -> Path:
    (tmp_path / "ipc").mkdir()
    config = {"directory": str(tmp_path / "ipc")}
    return write_settings(tmp_path, "towpath.layers.ipc.IPCChannelLayer", config)


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "ipc"])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "ipc":
        return ipc_settings(tmp_path)
    redis_server = request.getfixturevalue("redis_server")
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


def stats_of(process: ServeProcess) -> dict[str, Any]:
    """The counters the process logged when it stopped."""
    (line,) = [line for line in process.stderr_lines if " stats {" in line]
    report: dict[str, Any] = json.loads(line.split(" stats ", 1)[1])
    return report


async def expect(process: ServeProcess, text: str) -> str:
    """The first stderr line of ``process`` with ``text``, waiting up to ``WAIT`` for it; the
    process's output in the failure otherwise."""
    try:
        async with asyncio.timeout(WAIT):
            return await process.wait_for_stderr(text)
    except TimeoutError:
        raise AssertionError(f"no {text!r} in {WAIT} s\n{process.output()}") from None


async def open_chat(url: str) -> ClientConnection:
    return await connect(url, open_timeout=3 * WAIT)


async def stop(process: ServeProcess) -> int:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        return await process.wait()


@pytest.mark.slow
async def test_no_worker_is_said_once_then_a_worker_appears(
    any_settings: Path, tmp_path: Path
) -> None:
    args = ("--settings", str(any_settings), "--port", "0", "--untaken-warning", "0.5")
    async with (
        towpath_serve(*args, "--log-level", "debug", cwd=tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=3 * WAIT) as http,
        asyncio.timeout(3 * WAIT),
    ):
        first = asyncio.create_task(http.get("/hello/one"))
        warning = await expect(served, NO_WORKER)
        assert "WARNING" in warning and "(http.request: 1)" in warning
        assert f"start `towpath runworker --settings {any_settings}`" in warning

        # more requests and a WebSocket in the same outage: counted, not warned again
        more = [asyncio.create_task(http.get(f"/hello/{n}")) for n in ("two", "three")]
        chat = asyncio.create_task(open_chat(served.ws_url + "/chat/"))
        await expect(served, "still no worker: 4 request(s)")
        assert sum(NO_WORKER in line for line in served.stderr_lines) == 1
        assert not first.done()

        async with runworker("--settings", str(any_settings), tag="W", cwd=tmp_path):
            back = await expect(served, WORKER_BACK)
            assert "INFO" in back and "requests are being served again" in back
            for name, answer in zip(("one", "two", "three"), [first, *more], strict=True):
                response = await answer
                assert (response.status_code, response.text) == (200, f"hello {name} from W")
            async with await chat as socket:  # accepted once a worker took its connect
                await socket.send("hi")
                assert await socket.recv() == "hi via W"
        assert await stop(served) == 0
    report = stats_of(served)
    assert report["forwarding"]["no_worker_outages"] == 1
    assert report["forwarding"]["untaken_requests"] == 4
    assert sum(NO_WORKER in line for line in served.stderr_lines) == 1


@pytest.mark.redis
@pytest.mark.slow
async def test_busy_workers_are_said_to_be_busy(redis_server: Any, tmp_path: Path) -> None:
    settings = write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )
    worker_args = ("--settings", str(settings), "--concurrency", "1", "--heartbeat-interval", "0.1")
    serve_args = ("--settings", str(settings), "--port", "0", "--untaken-warning", "1")
    async with (
        runworker(*worker_args, tag="W", cwd=tmp_path) as worker,
        towpath_serve(*serve_args, cwd=tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
        asyncio.timeout(3 * WAIT),
    ):
        slow = asyncio.create_task(http.get("/slow", params={"s": "3"}))
        await expect(worker, "slow started on W")  # its only slot is taken
        queued = asyncio.create_task(http.get("/hello/queued"))
        warning = await expect(served, WAITING)
        assert "1 not yet taken by a worker after 1 s (http.request: 1;" in warning
        assert "workers work on 1 other(s) here" in warning
        assert (await slow).text == "slow done by W"
        assert (await queued).text == "hello queued from W"
        await expect(served, "requests are taken again")
        assert not [line for line in served.stderr_lines if NO_WORKER in line]
        assert await stop(served) == 0
    report = stats_of(served)
    assert report["forwarding"]["waiting_episodes"] == 1
    assert report["forwarding"]["no_worker_outages"] == 0


def unreachable_redis_settings(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()  # nothing listens there
    config = {"hosts": [f"redis://127.0.0.1:{port}"]}
    return write_settings(tmp_path, "towpath.layers.redis.RedisChannelLayer", config), port


@pytest.mark.slow
async def test_unreachable_redis_is_said_once_and_sigterm_exits_at_once(tmp_path: Path) -> None:
    settings, port = unreachable_redis_settings(tmp_path)
    async with towpath_serve("--settings", str(settings), "--port", "0", cwd=tmp_path) as served:
        async with asyncio.timeout(WAIT):
            line = await expect(served, "unreachable")
        assert "WARNING" in line and f"redis://127.0.0.1:{port}" in line
        started = time.monotonic()
        served.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await served.wait() == 0
        assert time.monotonic() - started < PROMPT_EXIT, served.output()
    assert sum("unreachable" in line for line in served.stderr_lines) == 1, served.output()


@pytest.mark.slow
async def test_unreachable_redis_with_a_request_in_flight_exits_within_graceful_timeout(
    tmp_path: Path,
) -> None:
    settings, _ = unreachable_redis_settings(tmp_path)
    args = ("--settings", str(settings), "--port", "0", "--graceful-timeout", "1")
    async with towpath_serve(*args, cwd=tmp_path) as served, asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(served.host, served.port)
        writer.write(
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        # 100 Continue: the forwarding app runs and reads the body
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(b"hi")
        await writer.drain()
        started = time.monotonic()
        served.send_signal(signal.SIGTERM)
        assert await served.wait() == 0
        took = time.monotonic() - started
        writer.close()
    assert took < 1 + PROMPT_EXIT, served.output()
    assert any("cutting 1 connection(s)" in line for line in served.stderr_lines), served.output()


@pytest.mark.slow
async def test_unreachable_rabbitmq_serves_at_once_and_exits_at_once(tmp_path: Path) -> None:
    """The RabbitMQ layer dials to make the control channel: startup must not wait for it (it
    did for ``retry_timeout``, then took the failure for an app without lifespan)."""
    pytest.importorskip("aio_pika")
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = {"url": url, "retry_timeout": 3 * WAIT}
    settings = write_settings(tmp_path, "towpath.layers.rabbitmq.RabbitMQChannelLayer", config)
    async with towpath_serve(
        "--settings", str(settings), "--port", "0", cwd=tmp_path, startup_timeout=WAIT
    ) as served:
        async with asyncio.timeout(WAIT):
            await expect(served, "unreachable")
        started = time.monotonic()
        served.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await served.wait() == 0
        assert time.monotonic() - started < PROMPT_EXIT, served.output()
    assert not [line for line in served.stderr_lines if "lifespan" in line], served.output()
