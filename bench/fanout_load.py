"""The load of ``python -m bench fanout``: its client processes and its publisher process.

``python -m bench.fanout_load clients --urls U1,U2 --first I --count N``: N WebSocket clients
(``websockets``, uvloop when installed) in this one process, client ``I + k`` on
``URLS[(I + k) % len(URLS)]``. Each connects (at most ``--connecting`` handshakes at once,
retried with back-off when refused), waits for the app's ``ready <member>`` frame and then
records every event it receives: its sequence number (a bitmap: gaps, duplicates, order) and
its latency, the receive time less the send time the publisher wrote in it (both
``time.monotonic_ns()``: one machine, one clock). A client never reconnects: a close from the
server is recorded with its code (1006: the connection ended without a close frame).

The parent drives it with one command per line on stdin and reads one JSON line per command
on stdout (the first once every client is ready or has failed):

* ``stall SECONDS``: client 0 stops reading for that long (``--stall-client``: its socket has
  a 4 KiB receive buffer and ``websockets`` stops reading after 16 queued frames, so the stall
  reaches the server within seconds);
* ``leave K``: the first K clients still open close at once (1000), answered with their
  members;
* ``drain LAST SECONDS``: until every open client has event LAST, or no event came for
  ``--quiet`` seconds, or SECONDS passed;
* ``report PUBLISHED``: per-client figures; the latencies go to ``--latencies`` (float64 ms);
* ``close``: every client closes; the process exits.

``python -m bench.fanout_load publish --backend B --redis URL --rate R --duration D``: prints
``ready``, waits for ``go`` on stdin, then sends ``R x D`` events to the group ``fanout``, the
k-th at ``start + k / R`` (at once when late), each a text ``"<seq> <send ns> <padding>"`` in
a ``fanout.event`` (``--kind event``) or a ``websocket.send`` (``--kind member``) message;
prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import random
import resource
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

__all__ = ["main"]

OPEN_TIMEOUT = 30.0
CONNECT_TRIES = 20
STALL_RCVBUF = 4096


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- clients -----------------------------------------------------------------------------------


class Client:
    """One WebSocket client: connects once, records every event until it is closed."""

    def __init__(self, index: int, url: str, latencies: array.array[float]) -> None:
        self.index = index
        self.url = url
        self.latencies = latencies
        self.socket: ClientConnection | None = None
        self.member = ""
        self.ready = asyncio.Event()
        self.readies = 0
        self.connect_tries = 0
        self.error = ""
        self.seen = bytearray()  # seen[seq]: how many times event seq arrived
        self.received = 0
        self.out_of_order = 0
        self.highest = -1
        self.last_ns = 0
        self.close_code: int | None = None  # the server's (or 1006), not ours
        self.closed_ns = 0
        self.left = False  # closed by us (``leave``) before the end
        self.resume = asyncio.Event()
        self.resume.set()
        self.stalled: dict[str, int] = {}
        self.arrived = asyncio.Event()  # set on every event (drain)

    async def open(self, gate: asyncio.Semaphore, rcvbuf: int | None) -> None:
        """Connect (retrying refusals) and wait for the app's ready frame."""
        backoff = 0.05
        while self.connect_tries < CONNECT_TRIES:
            self.connect_tries += 1
            try:
                async with gate:
                    sock = await _socket(self.url, rcvbuf) if rcvbuf else None
                    self.socket = await connect(
                        self.url,
                        open_timeout=OPEN_TIMEOUT,
                        ping_interval=None,  # the client's own slowness must not close it
                        compression=None,
                        proxy=None,
                        close_timeout=5,
                        sock=sock,
                    )
                    text = await asyncio.wait_for(self.socket.recv(), OPEN_TIMEOUT)
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.error = _describe(exc)
                if self.socket is not None:
                    with contextlib.suppress(Exception):
                        await self.socket.close()
                    self.socket = None
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # back-off, by design
                backoff = min(2 * backoff, 1.0)
                continue
            if isinstance(text, str) and text.startswith("ready "):
                self.member = text.partition(" ")[2]
                self.readies = 1
                self.error = ""
                self.ready.set()
                return
            self.error = f"first frame was not ready: {text!r:.80}"
            return

    async def listen(self) -> None:
        socket = self.socket
        if socket is None:
            return
        latencies, seen = self.latencies, self.seen
        try:
            while True:
                if not self.resume.is_set():
                    await self.resume.wait()
                text = await socket.recv()
                now = time.monotonic_ns()
                if not isinstance(text, str):
                    continue
                if text.startswith("ready "):  # a second accept (a resumed connect)
                    self.readies += 1
                    continue
                seq_text, sent_text, _ = text.split(" ", 2)
                seq = int(seq_text)
                latencies.append((now - int(sent_text)) / 1e6)
                if seq >= len(seen):
                    seen.extend(bytes(seq + 1 - len(seen) + 256))
                if seen[seq] < 255:
                    seen[seq] += 1
                if seq < self.highest:
                    self.out_of_order += 1
                self.highest = max(self.highest, seq)
                self.received += 1
                self.last_ns = now
                self.arrived.set()
        except ConnectionClosed as exc:
            if not self.left:
                self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.closed_ns = time.monotonic_ns()
        self.arrived.set()

    async def stall(self, seconds: float) -> None:
        self.stalled = {"from_ns": time.monotonic_ns(), "received_before": self.received}
        self.resume.clear()
        await asyncio.sleep(seconds)  # the scenario: a client that stops reading this long
        self.stalled["until_ns"] = time.monotonic_ns()
        self.stalled["highest_before_resume"] = self.highest
        self.resume.set()

    async def leave(self) -> None:
        self.left = True
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()

    def figures(self, published: int) -> dict[str, Any]:
        seen = self.seen[:published]
        unique = sum(1 for count in seen if count)
        figures: dict[str, Any] = {
            "index": self.index,
            "member": self.member,
            "ready": self.readies,
            "connect_tries": self.connect_tries,
            "error": self.error,
            "received": self.received,
            "missing": published - unique,
            "duplicates": sum(count - 1 for count in seen if count > 1),
            "out_of_order": self.out_of_order,
            "highest": self.highest,
            "last_ns": self.last_ns,
            "close_code": self.close_code,
            "closed_ns": self.closed_ns,
            "left": self.left,
        }
        if self.stalled:
            after = self.stalled.get("highest_before_resume", self.highest)
            figures["stalled"] = {
                **self.stalled,
                "received_after_resume": sum(1 for count in self.seen[after + 1 :] if count),
            }
        return figures


async def _socket(url: str, rcvbuf: int) -> socket.socket:
    """A connected TCP socket with a small receive buffer (the stalled client's)."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    except OSError:
        sock.close()
        raise
    return sock


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"[:120]


def _save(path: str, latencies: array.array[float]) -> None:
    Path(path).write_bytes(latencies.tobytes())


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _drain(clients: Sequence[Client], last: int, within: float, quiet: float) -> bool:
    """Until every open client has event ``last`` (True), or none progressed for ``quiet`` s
    or ``within`` s passed (False)."""
    deadline = time.monotonic() + within
    while True:
        waiting = [
            c
            for c in clients
            if c.socket is not None and c.close_code is None and not c.left and c.highest < last
        ]
        left = deadline - time.monotonic()
        if not waiting:
            return True
        if left <= 0:
            return False
        for client in waiting:
            client.arrived.clear()
        arrivals = [asyncio.ensure_future(c.arrived.wait()) for c in waiting]
        done, pending = await asyncio.wait(
            arrivals, timeout=min(quiet, left), return_when=asyncio.FIRST_COMPLETED
        )
        for future in pending:
            future.cancel()
        if not done:
            return False


async def run_clients(args: argparse.Namespace) -> None:
    _raise_fd_limit()
    urls = args.urls.split(",")
    latencies: array.array[float] = array.array("d")
    clients = [
        Client(args.first + k, urls[(args.first + k) % len(urls)], latencies)
        for k in range(args.count)
    ]
    gate = asyncio.Semaphore(args.connecting)
    started = time.monotonic()
    await asyncio.gather(
        *(
            c.open(gate, STALL_RCVBUF if args.stall_client and k == 0 else None)
            for k, c in enumerate(clients)
        )
    )
    listeners = [asyncio.create_task(c.listen()) for c in clients]
    errors: dict[str, int] = {}
    for client in clients:
        if not client.ready.is_set():
            errors[client.error] = errors.get(client.error, 0) + 1
    _emit(
        {
            "ready": sum(c.ready.is_set() for c in clients),
            "errors": errors,
            "retries": sum(c.connect_tries - 1 for c in clients),
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    background: set[asyncio.Task[None]] = set()
    while line := (await reader.readline()).decode().strip():
        command, *words = line.split()
        if command == "stall":
            task = asyncio.create_task(clients[0].stall(float(words[0])))
            background.add(task)
            task.add_done_callback(background.discard)
            _emit({"stalled": clients[0].index})
        elif command == "leave":
            open_now = [c for c in clients if c.ready.is_set() and c.close_code is None]
            leaving = open_now[: int(words[0])]
            began = time.monotonic()
            await asyncio.gather(*(c.leave() for c in leaving))
            _emit(
                {
                    "left": [c.member for c in leaving if c.ready.is_set()],
                    "seconds": round(time.monotonic() - began, 3),
                }
            )
        elif command == "drain":
            drained = await _drain(clients, int(words[0]), float(words[1]), args.quiet)
            _emit({"drained": drained})
        elif command == "report":
            _save(args.latencies, latencies)
            _emit({"clients": [c.figures(int(words[0])) for c in clients]})
        elif command == "close":
            for client in clients:
                client.left = True  # from now on a close is ours
            await asyncio.gather(
                *(c.socket.close() for c in clients if c.socket is not None),
                return_exceptions=True,
            )
            break
    for task in [*listeners, *background]:
        task.cancel()
    await asyncio.gather(*listeners, *background, return_exceptions=True)
    _emit({"closed": True})


# -- publisher ---------------------------------------------------------------------------------


def _layer(backend: str, redis_url: str) -> Any:
    if backend == "towpath":
        from towpath.config import build_layer, parse_channel_layers

        spec = {
            "BACKEND": "towpath.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
        return build_layer(parse_channel_layers({"default": spec}, source="bench").layer("default"))
    if backend == "channels-core":
        from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]

        return RedisChannelLayer(hosts=[redis_url])
    from channels_redis.pubsub import RedisPubSubChannelLayer  # type: ignore[import-untyped]

    return RedisPubSubChannelLayer(hosts=[redis_url])


async def run_publisher(args: argparse.Namespace) -> None:
    from bench.fanout_app import EVENT, GROUP

    layer = _layer(args.backend, args.redis)
    kind = EVENT if args.kind == "event" else "websocket.send"
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await layer.group_send(GROUP, {"type": "fanout.warmup"})  # connects; to no member yet
    _emit({"ready": True})
    if (await reader.readline()).decode().strip() != "go":
        return
    count = max(1, round(args.rate * args.duration))
    padding = "x" * args.pad
    send_ms: list[float] = []
    late_ms: list[float] = []
    errors: dict[str, int] = {}
    start = time.monotonic()
    first_ns = time.monotonic_ns()
    for seq in range(count):
        due = start + seq / args.rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # the publisher's schedule
        late_ms.append(max(0.0, -wait) * 1e3)
        sent = time.monotonic_ns()
        try:
            await layer.group_send(GROUP, {"type": kind, "text": f"{seq} {sent} {padding}"})
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        send_ms.append((time.monotonic_ns() - sent) / 1e6)
    last_ns = time.monotonic_ns()
    send_ms.sort()
    with contextlib.suppress(Exception):
        await layer.close()
    _emit(
        {
            "published": count,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "seconds": (last_ns - first_ns) / 1e9,
            "group_send_p50_ms": send_ms[len(send_ms) // 2],
            "group_send_max_ms": send_ms[-1],
            "late_max_ms": max(late_ms),
            "errors": errors,
        }
    )


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_load")
    sub = parser.add_subparsers(dest="role", required=True)
    clients = sub.add_parser("clients")
    clients.add_argument("--urls", required=True)
    clients.add_argument("--first", type=int, default=0)
    clients.add_argument("--count", type=int, required=True)
    clients.add_argument("--connecting", type=int, default=64)
    clients.add_argument("--quiet", type=float, default=3.0)
    clients.add_argument("--stall-client", action="store_true")
    clients.add_argument("--latencies", required=True)
    clients.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    publish = sub.add_parser("publish")
    publish.add_argument("--backend", choices=("towpath", "channels-core", "channels-pubsub"))
    publish.add_argument("--redis", required=True)
    publish.add_argument("--rate", type=float, required=True)
    publish.add_argument("--duration", type=float, required=True)
    publish.add_argument("--kind", choices=("event", "member"), default="event")
    publish.add_argument("--pad", type=int, default=64)
    args = parser.parse_args(argv)
    if args.role == "publish":
        asyncio.run(run_publisher(args))
        return 0
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            args.loop = "asyncio"
        else:
            uvloop.run(run_clients(args))
            return 0
    asyncio.run(run_clients(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
