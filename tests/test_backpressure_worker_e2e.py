"""Issue 18, worker side, with real processes (``towpath serve`` + ``towpath runworker`` on a
redis-server of their own, ``websockets`` clients): a client that stops reading while its group
gets events is served everything afterwards or closed 1013 with its membership gone, and the
other clients are unaffected; hundreds of clients under a group flood that overflows their
reply channels are never closed 1011 and leave no membership behind."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_cli_worker import ENV, runworker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import ServeProcess, towpath_serve

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT = 15.0
GROUP_KEY = "asgi:group:bp"


def write_settings(directory: Path, url: str, capacities: dict[str, int] | None = None) -> Path:
    config: dict[str, Any] = {"hosts": [url]}
    if capacities:
        config["channel_capacity"] = capacities
    path = directory / "bp_settings.py"
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
        f"'CONFIG': {config!r}, 'ROUTING': 'backpressure_worker_app:routes'}}}}\n"
    )
    return path


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, settings: Path, *worker_args: str
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    async with (
        towpath_serve("--settings", str(settings), "--port", "0", cwd=tmp_path, env=ENV) as served,
        runworker("--settings", str(settings), *worker_args, tag="W", cwd=tmp_path) as worker,
    ):
        yield served, worker


class Client:
    """One WebSocket client of ``/bp/``: what it received, how it was closed."""

    def __init__(self, socket_: ClientConnection) -> None:
        self.socket = socket_
        self.member = ""
        self.texts: list[str] = []
        self.close_code: int | None = None
        self.reading: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        first = str(await self.socket.recv())
        assert first.startswith("ready "), first
        self.member = first.split()[1]

    def read(self) -> None:
        self.reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self.texts.append(str(await self.socket.recv()))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006

    @property
    def closed(self) -> bool:
        return self.reading is not None and self.reading.done()

    def got_all_or_closed(self, events: int) -> bool:
        return self.closed or self.seqs() == list(range(events))

    def got_text(self, start: str) -> bool:
        return any(text.startswith(start) for text in self.texts)

    def seqs(self) -> list[int]:
        return [int(text.split()[0]) for text in self.texts if text[0].isdigit()]


async def open_client(url: str, rcvbuf: int | None = None, **kwargs: Any) -> Client:
    sock = None
    if rcvbuf is not None:  # a small receive buffer: a stall reaches the server soon
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    client = Client(await connect(url, sock=sock, open_timeout=WAIT, **kwargs))
    await client.ready()
    return client


async def members(layer: RedisChannelLayer) -> set[str]:
    found = await layer.connection(0).zrange(GROUP_KEY, 0, -1)
    return {m.decode() if isinstance(m, bytes) else str(m) for m in found}


async def until(condition: Callable[[], Awaitable[object] | object], pause: float = 0.05) -> None:
    """Wait for ``condition()`` (awaited if need be; bounded by the test's timeout)."""
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        await asyncio.sleep(pause)


async def count_members(layer: RedisChannelLayer, count: int) -> bool:
    return len(await members(layer)) >= count


async def counted(worker: ServeProcess, name: str, count: int) -> bool:
    """Has the worker counted ``name`` ``count`` times (its stats line, asked by SIGUSR1)?"""
    return bool((await worker.logged_stats())["worker"][name] >= count)


async def exact_members(layer: RedisChannelLayer, count: int) -> bool:
    return len(await members(layer)) == count


async def until_no_members(layer: RedisChannelLayer) -> None:
    async def none() -> bool:
        return not await members(layer)

    await until(none, 0.1)


@pytest.mark.timeout(120)
async def test_a_client_that_stops_reading_for_10_s_is_served_after_or_closed_1013(
    tmp_path: Path, redis_server: Any
) -> None:
    settings = write_settings(tmp_path, redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    pad = "x" * 2000
    events = 240  # 12 s at 20 a second, each ~2 KB: far more than the socket buffers hold
    async with stack(tmp_path, settings, "--send-timeout", "2") as (served, worker):
        url = served.ws_url + "/bp/"
        try:
            async with asyncio.timeout(4 * WAIT):
                others = [await open_client(url) for _ in range(10)]
                stalled = await open_client(url, rcvbuf=4096, max_queue=1)
                for client in others:
                    client.read()
                assert len(await members(layer)) == 11
                for seq in range(events):
                    if seq == 20:  # the stall starts: nothing read for 10 s
                        resume_at = asyncio.get_running_loop().time() + 10
                    await layer.group_send("bp", {"type": "bp.event", "text": f"{seq} {pad}"})
                    await asyncio.sleep(0.05)  # the publisher's pace, not a synchronisation
                    resume = seq > 20 and asyncio.get_running_loop().time() >= resume_at
                    if resume and stalled.reading is None:
                        stalled.read()
                if stalled.reading is None:
                    stalled.read()
                # every other client gets every event, in order, and stays open
                for client in others:
                    await until(functools.partial(client.got_all_or_closed, events))
                    assert client.close_code is None and client.seqs() == list(range(events))
                # the stalled one: everything, or a 1013 with its membership gone
                await until(functools.partial(stalled.got_all_or_closed, events))
                stats = (await worker.logged_stats())["worker"]
                if stalled.closed:
                    assert stalled.close_code == 1013, stalled.close_code
                    assert stalled.member not in await members(layer)
                    assert stats["slow_clients_closed"] == 1
                    got = stalled.seqs()
                    assert got == sorted(set(got))  # what it got before the close, in order
                else:
                    assert stats["slow_clients_closed"] == 0
                assert {c.member for c in others} <= await members(layer)
                for client in [*others, stalled]:
                    await client.socket.close()
                await until_no_members(layer)
            assert "Traceback" not in worker.output(), worker.output()
        finally:
            await layer.close()


@pytest.mark.timeout(180)
async def test_hundreds_of_clients_under_a_flood_that_fills_their_reply_channels(
    tmp_path: Path, redis_server: Any
) -> None:
    """Reply channels of 5 messages and a burst of 40 events to 300 clients at once: the
    consumers' sends wait for their channels; nobody is closed 1011, every client gets every
    event, and no membership is left once they close."""
    settings = write_settings(tmp_path, redis_server.url, {"interface*": 5})
    layer = RedisChannelLayer(hosts=[redis_server.url])
    count, events = 300, 40
    async with stack(tmp_path, settings, "--send-timeout", "30") as (served, worker):
        url = served.ws_url + "/bp/"
        try:
            async with asyncio.timeout(8 * WAIT):
                clients = []
                for _ in range(count):
                    clients.append(await open_client(url))
                for client in clients:
                    client.read()
                await until(lambda: count_members(layer, count), 0.1)
                for seq in range(events):
                    await layer.group_send("bp", {"type": "bp.event", "text": f"{seq}"})
                for client in clients:
                    await until(functools.partial(client.got_all_or_closed, events))
                codes = [c.close_code for c in clients if c.closed]
                assert 1011 not in codes
                stats = (await worker.logged_stats())["worker"]
                assert stats["send_waits"] > 0, stats  # the reply channels did fill
                assert codes == [], (codes, stats)
                await asyncio.gather(*(c.socket.close() for c in clients))
                await until_no_members(layer)
            assert "Traceback" not in worker.output(), worker.output()
        finally:
            await layer.close()


@pytest.mark.parametrize("send_timeout", [1.0, 10.0])
@pytest.mark.timeout(120)
async def test_a_server_paused_while_its_reply_channels_fill(
    tmp_path: Path, redis_server: Any, send_timeout: float
) -> None:
    """The server is stopped (SIGSTOP) while 120 events go to its 10 clients (reply channels
    hold 100): their consumers' sends wait. Paused longer than ``--send-timeout`` (1 s), each
    client is closed 1013 on the server's control channel once it runs again (what it had is
    delivered first), and the consumers left the group before the server even resumed;
    paused shorter (10 s bound), nobody is closed and every event arrives."""
    settings = write_settings(tmp_path, redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    count, events = 10, 120
    worker_args = ("--send-timeout", str(send_timeout))
    async with stack(tmp_path, settings, *worker_args) as (served, worker):
        url = served.ws_url + "/bp/"
        try:
            async with asyncio.timeout(4 * WAIT):
                clients = [await open_client(url) for _ in range(count)]
                for client in clients:
                    client.read()
                served.send_signal(signal.SIGSTOP)
                try:
                    for seq in range(events):
                        await layer.group_send("bp", {"type": "bp.event", "text": f"{seq}"})
                    # every consumer waits on its full channel
                    await until(lambda: counted(worker, "send_waits", count), 0.1)
                    if send_timeout < 5:
                        await worker.wait_for_stderr("Closing WebSocket")
                        await until(lambda: counted(worker, "closes_via_control", count), 0.1)
                        assert await members(layer) == set()  # left while the server slept
                finally:
                    served.send_signal(signal.SIGCONT)
                for client in clients:
                    await until(functools.partial(client.got_all_or_closed, events))
                stats = (await worker.logged_stats())["worker"]
                if send_timeout < 5:
                    for client in clients:
                        await until(functools.partial(getattr, client, "closed"))
                        assert client.close_code == 1013
                        got = client.seqs()  # what its server had taken before the close
                        assert got and got == list(range(len(got)))
                    assert stats["slow_clients_closed"] == count
                else:
                    assert [c.close_code for c in clients] == [None] * count
                    assert stats["slow_clients_closed"] == 0
                    assert len(await members(layer)) == count
                assert stats["closes_failed"] == 0
                await asyncio.gather(*(c.socket.close() for c in clients))
                await until_no_members(layer)
            assert "Traceback" not in worker.output(), worker.output()
        finally:
            await layer.close()


@pytest.mark.timeout(120)
async def test_a_worker_whose_loop_is_blocked_past_the_timeout_hands_over_exactly_once(
    tmp_path: Path, redis_server: Any
) -> None:
    """An app blocks its worker's event loop (sync code) for 3 s, three times the servers'
    ``--heartbeat-timeout``: no heartbeat goes out meanwhile, so the server declares that
    worker gone and resumes its clients on the other worker, each once. When the blocked
    worker runs again it finds itself silent past the timeout and ends its instances of them
    (fenced): they leave the group and their output is dropped, so no client gets a second
    consumer's frames (no duplicate event, no output from the old owner)."""
    settings = write_settings(tmp_path, redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    serve_args = ("--settings", str(settings), "--port", "0", "--heartbeat-timeout", "1")
    worker_args = ("--settings", str(settings), "--heartbeat-interval", "0.2")
    async with (
        towpath_serve(*serve_args, cwd=tmp_path, env=ENV) as served,
        runworker(*worker_args, tag="A", cwd=tmp_path) as worker_a,
        runworker(*worker_args, tag="B", cwd=tmp_path) as worker_b,
    ):
        url = served.ws_url + "/bp/"
        try:
            async with asyncio.timeout(4 * WAIT):
                clients = [await open_client(url) for _ in range(6)]
                for client in clients:
                    client.read()
                hog = clients[0]
                blocked = hog.member.partition("!")[0]  # the worker process's channel prefix
                moved = [c for c in clients if c.member.startswith(blocked + "!")]
                await hog.socket.send("hog")
                # the blocked worker's clients are resumed on the other one, once each
                for client in moved:
                    await until(functools.partial(client.got_text, "resumed "))
                # the blocked worker, running again, ends its instances of them
                waits = {
                    asyncio.ensure_future(w.wait_for_stderr("(fenced)")): w
                    for w in (worker_a, worker_b)
                }
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                owner = waits[done.pop()]
                stats = (await owner.logged_stats())["worker"]
                assert stats["fenced"] == len(moved), stats
                await until(functools.partial(exact_members, layer, len(clients)))
                events = 20
                for seq in range(events):
                    await layer.group_send("bp", {"type": "bp.event", "text": f"{seq}"})
                for client in clients:
                    await until(functools.partial(client.got_all_or_closed, events))
                for client in clients:
                    assert client.close_code is None
                    assert client.seqs() == list(range(events))  # no duplicate, none lost
                    assert "hogged" not in client.texts  # the fenced instance's output
                    resumed = [t for t in client.texts if t.startswith("resumed ")]
                    assert len(resumed) == (1 if client in moved else 0), client.texts
                    assert not [t for t in client.texts if t.startswith("ready ")]
                for client in clients:
                    await client.socket.close()
                await until_no_members(layer)
        finally:
            await layer.close()
