"""The production stack under a real supervisord: the file ``towpath deploy supervisord``
renders, a real ``redis-server``, the ``workerapp`` routes. Two interface servers share
supervisord's fcgi-program socket (or, with --own-port, have a port each; or Redis runs under
the same supervisord). Workers are restarted with ``supervisorctl`` one at a time while clients
keep sending: every HTTP request answers 200 and every WebSocket stays open and keeps hearing
itself. One worker is SIGKILLed: supervisord starts it again and its WebSockets are resumed.
The servers are restarted one at a time while clients keep connecting: no connection is
refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.commands import ENV, write_settings
from tests.support.waiting import WAIT
from towpath.testing.services import REDIS_INSTALL_HINT, find_redis_server, require_service
from towpath.testing.supervisor import SupervisorStack, supervisor_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

#: short heartbeats, so a killed worker's WebSockets are resumed within about a second
HEARTBEATS: dict[str, Any] = {
    "serve_args": ("--heartbeat-timeout", "1"),
    "worker_args": ("--heartbeat-interval", "0.2"),
}
WS_CLIENTS = 4
HTTP_LOOPS = 4
#: seconds a chat client waits to hear its message back before it counts it lost
ECHO_WAIT = 3.0


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, settings: Path, **options: Any) -> AsyncIterator[SupervisorStack]:
    async with supervisor_stack(tmp_path, settings, env=ENV, **HEARTBEATS, **options) as running:
        yield running


def socket_of(pid: int, fd: int = 0) -> str:
    """What ``fd`` of process ``pid`` is, as ``socket:[inode]``."""
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def sockets_of(pid: int) -> set[str]:
    return {socket_of(pid, int(fd)) for fd in os.listdir(f"/proc/{pid}/fd")} - {""}


# -- traffic -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Something the traffic loops advance; waiters wake on every step."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self) -> None:
        self.changed.set()

    async def next(self) -> None:
        self.changed.clear()
        await self.changed.wait()


@dataclass
class HttpTraffic:
    """Loops of GET /hello/N until stopped; every answer's status and every error kept."""

    url: str
    fresh_connections: bool = False
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    progress: Progress = field(default_factory=Progress)

    async def loop(self, index: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0 if self.fresh_connections else 10)
        async with httpx.AsyncClient(base_url=self.url, timeout=WAIT, limits=limits) as http:
            sent = 0
            while not self.stopping.is_set():
                sent += 1
                try:
                    response = await http.get(f"/hello/{index}-{sent}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self.progress.step()
                    continue
                self.statuses.append(response.status_code)
                self.progress.step()
                if response.text != f"hello {index}-{sent} from w":
                    self.errors.append(f"{response.status_code} {response.text!r}")

    async def until(self, count: int) -> None:
        """Until ``count`` more requests were answered (or failed)."""
        goal = len(self.statuses) + len(self.errors) + count
        while len(self.statuses) + len(self.errors) < goal:
            await self.progress.next()


@dataclass
class ChatClient:
    """One chat WebSocket that keeps sending and checking it hears itself back."""

    socket: ClientConnection
    index: int
    progress: Progress
    heard: int = 0
    #: messages not heard back within ECHO_WAIT: lost (at most once), and the next one is sent
    lost: list[str] = field(default_factory=list)
    closed: str | None = None

    async def loop(self, stopping: asyncio.Event) -> None:
        sent = 0
        try:
            while not stopping.is_set():
                sent += 1
                text = f"c{self.index}-{sent}"
                await self.socket.send(text)
                try:
                    async with asyncio.timeout(ECHO_WAIT):
                        while not str(await self.socket.recv()).startswith(f"{text} via "):
                            pass
                except TimeoutError:
                    self.lost.append(text)
                    continue
                self.heard += 1
                self.progress.step()
        except Exception as exc:
            self.closed = f"{type(exc).__name__}: {exc}"
            self.progress.step()


@contextlib.asynccontextmanager
async def chatting(ws_url: str) -> AsyncIterator[list[ChatClient]]:
    """WS_CLIENTS chat clients sending and hearing themselves until the block ends."""
    stopping = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(ws_url + "/chat/", open_timeout=WAIT))
            for _ in range(WS_CLIENTS)
        ]
        progress = Progress()
        clients = [ChatClient(socket, index, progress) for index, socket in enumerate(sockets)]
        tasks = [asyncio.create_task(client.loop(stopping)) for client in clients]
        try:
            yield clients
        finally:
            stopping.set()
            await asyncio.gather(*tasks)
        for client in clients:
            assert client.closed is None, f"client {client.index} dropped: {client.closed}"


async def each_hears_itself(clients: list[ChatClient], times: int = 3) -> None:
    """Until every client heard itself ``times`` more times: its connection works now."""
    goals = [client.heard + times for client in clients]
    while any(client.heard < goal for client, goal in zip(clients, goals, strict=True)):
        for client in clients:
            assert client.closed is None, f"client {client.index} dropped: {client.closed}"
        await clients[0].progress.next()


async def first_line(running: SupervisorStack, offsets: dict[str, int], text: str) -> str:
    """The first line containing ``text`` that any of the processes in ``offsets`` logs past
    its offset."""
    waiters = [
        asyncio.create_task(running.wait_for_log(name, text, after=offset))
        for name, offset in offsets.items()
    ]
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        return done.pop().result()
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


# -- tests -------------------------------------------------------------------------------------


async def test_one_box_stack_serves_through_supervisords_socket(tmp_path: Path) -> None:
    """--with-redis: Redis runs under the same supervisord, and the settings find it through
    REDIS_URL; two servers accept from the one socket supervisord holds."""
    binary = find_redis_server()
    require_service("redis-server", binary is not None, REDIS_INSTALL_HINT)
    settings = tmp_path / "one_box_settings.py"
    settings.write_text(
        "import os\n"
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
        "'CONFIG': {'hosts': [os.environ['REDIS_URL']]}, "
        "'ROUTING': 'tests.support.workerapp:routes'}}\n"
    )
    async with stack(tmp_path, settings, with_redis=True, redis_server=binary) as running:
        assert running.programs[0] == "towpath-redis"
        servers = await running.pids("towpath-serve")
        assert list(servers) == running.servers and len(servers) == 2
        shared = {socket_of(pid) for pid in servers.values()}
        assert len(shared) == 1, shared
        (listening,) = shared
        assert listening.startswith("socket:")
        assert listening in sockets_of(running.process.pid), "supervisord holds the socket"

        async with httpx.AsyncClient(base_url=running.url, timeout=WAIT) as http:
            answers = await asyncio.gather(*(http.get(f"/hello/{n}") for n in range(20)))
        assert [(a.status_code, a.text) for a in answers] == [
            (200, f"hello {n} from w") for n in range(20)
        ]
        async with chatting(running.ws_url) as clients:
            async with asyncio.timeout(WAIT):
                await each_hears_itself(clients)
        assert not any(client.lost for client in clients)
        assert "stopwaitsecs=15" in running.config_path.read_text()  # 5 s graceful + 10


async def test_rolling_worker_restart_and_a_killed_worker_drop_nothing(
    settings: Path, tmp_path: Path
) -> None:
    async with stack(tmp_path, settings) as running, chatting(running.ws_url) as clients:
        http = HttpTraffic(running.url)
        loops = [asyncio.create_task(http.loop(n)) for n in range(HTTP_LOOPS)]
        try:
            async with asyncio.timeout(WAIT):
                await each_hears_itself(clients)
                await http.until(20)
            for worker in running.workers:  # one at a time, as docs/deployment.md says
                async with asyncio.timeout(WAIT):
                    before = len(http.statuses)
                    await running.restart(worker)
                    assert len(http.statuses) > before, "no request was sent during the restart"
                    await each_hears_itself(clients)
                    await http.until(20)
        finally:
            http.stopping.set()
            await asyncio.gather(*loops)
        assert http.errors == []
        assert set(http.statuses) == {200}
        assert [client.lost for client in clients] == [[]] * WS_CLIENTS, "lost on a handback"
        for worker in running.workers:  # stopped by SIGTERM within stopwaitsecs, cleanly
            name = worker.partition(":")[2]
            assert f"stopped: {name} (exit status 0)" in running.log("supervisord")

        # SIGKILL: supervisord starts the worker again; the servers miss its heartbeats and
        # resume its WebSockets on a worker that runs
        # (the rolling restart left every WebSocket on worker 00: 01 handed its back to it)
        victim = running.workers[0]
        offsets = {server: running.log_size(server) for server in running.servers}
        async with asyncio.timeout(WAIT):
            killed = await running.kill(victim)
            new_pid = await running.wait_restarted(victim, killed)
            await each_hears_itself(clients)
            await first_line(running, offsets, "gone")  # a server declared it gone
        assert new_pid != killed
        states = await running.states()
        assert all(state.state == "RUNNING" for state in states.values()), states
        assert "exited: towpath-worker_00 (terminated by SIGKILL" in running.log("supervisord")


async def test_rolling_server_restart_refuses_no_connection(settings: Path, tmp_path: Path) -> None:
    async with stack(tmp_path, settings) as running:
        servers = await running.pids(f"{running.config.name}-serve")
        listening = socket_of(servers[running.servers[0]])
        http = HttpTraffic(running.url, fresh_connections=True)
        loops = [asyncio.create_task(http.loop(n)) for n in range(HTTP_LOOPS)]
        try:
            async with asyncio.timeout(WAIT):
                await http.until(20)
            for server in running.servers:
                async with asyncio.timeout(WAIT):
                    before = len(http.statuses)
                    pid = await running.restart(server)
                    assert len(http.statuses) > before, "no request was sent during the restart"
                    await http.until(20)
                assert socket_of(pid) == listening, "the restarted server got the same socket"
        finally:
            http.stopping.set()
            await asyncio.gather(*loops)
        # none refused, and none cut: a connection a stopping server had just accepted gets
        # its first request answered (protocol/http11.py, FIRST_REQUEST_GRACE)
        assert http.errors == []
        assert set(http.statuses) == {200}


async def test_own_port_servers(settings: Path, tmp_path: Path) -> None:
    """--own-port: each server process on its own port, numbered by supervisord."""
    async with stack(tmp_path, settings, own_port=True, workers=1) as running:
        first = running.port
        assert running.servers == [
            f"towpath-serve:towpath-serve_{first}",
            f"towpath-serve:towpath-serve_{first + 1}",
        ]
        for port in (first, first + 1):
            async with httpx.AsyncClient(timeout=WAIT) as http:
                response = await http.get(f"http://127.0.0.1:{port}/hello/{port}")
            assert (response.status_code, response.text) == (200, f"hello {port} from w")
            name = f"towpath-serve:towpath-serve_{port}"
            assert f"towpath serving on http://127.0.0.1:{port}" in running.log(name)
