"""Decoupled-mode attacks of ``python -m bench attacks``: ``towpath serve --settings`` and one
``towpath runworker --asgi bench.attacks_app:app`` over a ``redis-server`` of the bench's own
(free port, no persistence; ``towpath.testing.services.RedisServer``, which restarts on the
same port). The serve and worker processes are ``bench.decoupled``'s (``SERVE``, ``WORKER``).

* :func:`malformed`: an entry that no towpath process wrote is pushed into the Redis list the
  worker reads requests from (``asgi:http.request``): bytes without the expiry header
  (``garbage``), a valid header before bytes that are not msgpack (``payload``), or a valid
  header before msgpack that is not a message (``shape``), or two entries at once, one empty
  and one whose first 13 bytes are not digits (``poison``: before issue 17 each killed the
  fetcher of the worker that read it, silently). Is the next request served (within
  ``--decoupled-wait`` seconds), and does the worker live on?
* :func:`redis_outage`: ``--outage-clients`` WebSocket echo clients (the ``websockets``
  library) each send ``seq`` numbers every ``--outage-period`` seconds; after
  ``--outage-warmup`` s redis-server is killed (SIGKILL), started again on the same port
  ``--outage-seconds`` later, the clients go on for ``--outage-after`` s, then wait for the
  last echoes. Counted: echoes out of order (a seq below one echoed before), duplicates,
  clients the server closed, messages never echoed (lost); the time is from Redis's restart
  to the first echo of a message sent after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgpack
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.attacks_base import HOST, Outcome, probe
from bench.decoupled import SERVE, WORKER, _start
from bench.procs import RunError, ServerProcess
from towpath.testing.services import RedisServer, RedisServerError

__all__ = ["DecoupledStack", "malformed", "redis_outage"]

APP = "bench.attacks_app:app"
REQUEST_LIST = "asgi:http.request"
SETTINGS = """\
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {{"hosts": [{url!r}]}},
    }},
}}
"""


class DecoupledStack:
    """redis-server + ``towpath serve --settings`` + one ``towpath runworker --asgi``; ready
    once a GET has been answered end to end. Measured (RSS, CPU, logs): serve and worker."""

    name = "towpath-decoupled"

    def __init__(self, cpu: str | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="towpath-attacks-")
        self.processes: list[tuple[str, ServerProcess]] = []
        try:
            self.redis = RedisServer().start()
        except RedisServerError as exc:
            self._dir.cleanup()
            raise RunError(str(exc)) from exc
        try:
            settings = Path(self._dir.name) / f"attacks_settings_{self.redis.port}.py"
            settings.write_text(SETTINGS.format(url=self.redis.url), encoding="utf-8")
            worker = _start(WORKER, str(settings), cpu, ("--asgi", APP))
            self.processes.append(("worker", worker))
            self.serve = _start(SERVE, str(settings), cpu)
            self.processes.append(("serve", self.serve))
            self.serve.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.port = self.serve.port

    def pids(self) -> list[int]:
        return [pid for _role, process in self.processes for pid in process.pids()]

    def logs(self) -> list[IO[bytes]]:
        return [process.log for _role, process in self.processes]

    def exited(self) -> str | None:
        gone = [
            f"{role} exited {process.process.returncode}"
            for role, process in self.processes
            if process.process.poll() is not None
        ]
        if not self.redis.running:
            gone.append("redis-server is down")
        return ", ".join(gone) or None

    def log_tail(self) -> str:
        tails = []
        for role, process in self.processes:
            with contextlib.suppress(ValueError):
                tails.append(f"[{role}: {process.log_tail(3)[-300:]}]")
        return " ".join(tails)

    def stop(self) -> None:
        while self.processes:
            _role, process = self.processes.pop()  # serve first, then the worker
            process.stop()
        self.redis.close()
        self._dir.cleanup()


def _entry(body: bytes, ttl: float = 60.0) -> bytes:
    """A list entry as the layer writes it: 13 digits of expiry (ms since the epoch), data."""
    return b"%013d" % int((time.time() + ttl) * 1000) + body


#: which -> (what is pushed, the entries: made when the attack runs, so expiries are fresh)
MALFORMED: dict[str, tuple[str, Callable[[], list[bytes]]]] = {
    "garbage": ("bytes without the expiry header", lambda: [b"garbage"]),
    "payload": (
        "expiry header, then bytes that are not msgpack",
        lambda: [_entry(b"\xc1 not msgpack")],
    ),
    "shape": ("expiry header, then msgpack of a list", lambda: [_entry(msgpack.packb([1, 2, 3]))]),
    "poison": (
        "an empty entry and one whose first 13 bytes are not digits",
        lambda: [b"", b"not-an-expiry" + b"x" * 40],
    ),
}


def malformed(stack: DecoupledStack, options: argparse.Namespace, which: str) -> Outcome:
    text, make = MALFORMED[which]
    client = redis.Redis(host=HOST, port=stack.redis.port)
    try:
        client.rpush(REQUEST_LIST, *make())
    finally:
        client.close()
    started = time.monotonic()
    served = probe(stack.port, options.decoupled_wait)
    took = time.monotonic() - started
    answer = "next request served" if served else f"next request NOT served in {took:.1f} s"
    if stack.exited():
        answer += f" ({stack.exited()})"
    return Outcome(answer, took if served else None, {"entry": text})


# -- a Redis outage under WebSocket echo clients ------------------------------------------------


class _EchoClient:
    def __init__(self, index: int, heard: asyncio.Event) -> None:
        self.index = index
        self.heard = heard  # set on every echo and on the close (for the final wait)
        self.sent: dict[int, float] = {}
        self.echoed: set[int] = set()
        self.echo_at: dict[int, float] = {}
        self.highest = -1
        self.out_of_order = 0
        self.duplicates = 0
        self.closed: str | None = None
        self.closed_at = 0.0
        self.socket: ClientConnection | None = None
        self.listener: asyncio.Task[None] | None = None

    async def run(self, url: str, period: float, talking: asyncio.Event) -> None:
        try:
            self.socket = await connect(url, open_timeout=10, ping_interval=None, proxy=None)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.closed = f"connect failed: {type(exc).__name__}"
            return
        self.listener = asyncio.create_task(self._listen(self.socket))
        seq = 0
        while talking.is_set() and self.closed is None:
            self.sent[seq] = time.monotonic()
            try:
                await self.socket.send(str(seq))
            except ConnectionClosed as exc:
                del self.sent[seq]  # not sent: the connection was gone
                self._closed(exc)
                return
            seq += 1
            await asyncio.sleep(period)

    def _closed(self, exc: ConnectionClosed) -> None:
        if self.closed is None:
            self.closed_at = time.monotonic()
            code = exc.rcvd.code if exc.rcvd is not None else None
            self.closed = f"closed {code}" if code is not None else "closed (no close frame)"

    async def _listen(self, socket: ClientConnection) -> None:
        try:
            async for message in socket:
                seq = int(message)
                if seq in self.echoed:
                    self.duplicates += 1
                    continue
                if seq < self.highest:
                    self.out_of_order += 1
                self.highest = max(self.highest, seq)
                self.echoed.add(seq)
                self.echo_at[seq] = time.monotonic()
                self.heard.set()
        except ConnectionClosed as exc:
            self._closed(exc)
        self.heard.set()

    def missing(self) -> int:
        return len(self.sent.keys() - self.echoed)

    async def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.socket.close()
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener


async def _outage(stack: DecoupledStack, options: argparse.Namespace) -> dict[str, Any]:
    url = f"ws://{HOST}:{stack.port}/ws"
    heard = asyncio.Event()
    clients = [_EchoClient(i, heard) for i in range(options.outage_clients)]
    talking = asyncio.Event()
    talking.set()
    tasks = [asyncio.create_task(c.run(url, options.outage_period, talking)) for c in clients]
    try:
        await asyncio.sleep(options.outage_warmup)
        killed = time.monotonic()
        await asyncio.to_thread(stack.redis.kill)
        await asyncio.sleep(options.outage_seconds)
        await asyncio.to_thread(stack.redis.start)
        restarted = time.monotonic()
        await asyncio.sleep(options.outage_after)
        talking.clear()
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.drain_echoes):
                while any(c.missing() and c.closed is None for c in clients):
                    heard.clear()
                    await heard.wait()
    finally:
        talking.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    after = [
        at for c in clients for seq, at in c.echo_at.items() if c.sent.get(seq, 0.0) >= restarted
    ]
    return {
        "clients": len(clients),
        "sent": sum(len(c.sent) for c in clients),
        "lost": sum(c.missing() for c in clients),
        "lost_sent_before_kill": sum(
            1 for c in clients for seq, at in c.sent.items() if at < killed and seq not in c.echoed
        ),
        "out_of_order": sum(c.out_of_order for c in clients),
        "duplicates": sum(c.duplicates for c in clients),
        "closed": [c.closed for c in clients if c.closed],
        "closed_after_kill_seconds": sorted(
            round(c.closed_at - killed, 2) for c in clients if c.closed_at
        ),
        "recovery_seconds": min(after) - restarted if after else None,
    }


def redis_outage(stack: DecoupledStack, options: argparse.Namespace) -> Outcome:
    figures = asyncio.run(_outage(stack, options))
    open_ = figures["clients"] - len(figures["closed"])
    answer = (
        f"{open_}/{figures['clients']} open, {figures['out_of_order']} out of order, "
        f"{figures['lost']} of {figures['sent']} lost"
    )
    if figures["duplicates"]:
        answer += f", {figures['duplicates']} duplicated"
    if figures["closed"]:
        answer += f" ({', '.join(sorted(set(figures['closed'])))})"
    if figures["recovery_seconds"] is None:
        answer += "; no echo after the restart"
    return Outcome(answer, figures["recovery_seconds"], figures)
