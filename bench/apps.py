"""Applications the server benchmark runs, and the bare asyncio ceiling.

``hello`` and ``echo`` are raw ASGI 3 apps (no framework), so a benchmark measures the server
and not the app: ``hello`` answers every HTTP request with 200 ``text/plain`` "Hello, world!";
``echo`` echoes every WebSocket message and answers HTTP as ``hello`` does. Both support
lifespan (startup and shutdown complete at once).

``python -m bench.apps ceiling --port P`` runs the Python ceiling: a bare asyncio server, no
HTTP parser and no ASGI, that writes a canned response for every request head it sees (it
counts ``\\r\\n\\r\\n``, so pipelined GETs work; bodies do not) and answers a WebSocket
upgrade with a canned 101 and echoes frames with a minimal parser: about the most plain
asyncio Python can do on one core. It is also the fast peer that shows whether the WebSocket
load generator keeps up.

``python -m bench.apps wsload --port P`` is that load generator: N connections (64), each
sends a short masked text frame (pre-built) and waits for its echo, again and again; after a
warm-up it counts round trips for ``--duration`` seconds and prints one JSON line. With
``--idle`` it opens the connections, prints a JSON line once every handshake is done, and
holds them open until its stdin closes (the idle-memory scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

__all__ = ["CeilingProtocol", "WSLoadProtocol", "echo", "hello", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"Hello, world!"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """200 text/plain "Hello, world!" for every HTTP request (the body is not read)."""
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """WebSocket echo (text and binary); HTTP requests get ``hello``'s answer."""
    if scope["type"] == "websocket":
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes")})
            elif kind == "websocket.connect":
                await send({"type": "websocket.accept"})
            else:  # websocket.disconnect
                return
    elif scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


# -- the ceiling: a bare asyncio server --------------------------------------------------------

_CANNED = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_KEY = re.compile(rb"(?i)\r\nsec-websocket-key:\s*([^\r\n]+)")


class CeilingProtocol(asyncio.Protocol):
    """Canned HTTP/1.1 answers, or after an upgrade a minimal WebSocket echo (no checks)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.websocket = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self.buffer + data if self.buffer else data
        if self.websocket:
            self.buffer = self._frames(buffer)
            return
        heads = buffer.count(b"\r\n\r\n")
        if not heads:
            self.buffer = buffer
            return
        match = _WS_KEY.search(buffer)
        if match is not None:
            accept = base64.b64encode(hashlib.sha1(match.group(1).strip() + _WS_GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-accept: " + accept + b"\r\n\r\n"
            )
            self.websocket = True
            self.buffer = self._frames(buffer[buffer.index(b"\r\n\r\n") + 4 :])
            return
        self.transport.write(_CANNED * heads)
        self.buffer = buffer[buffer.rindex(b"\r\n\r\n") + 4 :]

    def _frames(self, buffer: bytes) -> bytes:
        """Echo every complete client frame (unmasked); return what is left over."""
        assert self.transport is not None
        out = []
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length = int.from_bytes(buffer[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length = int.from_bytes(buffer[2:10], "big")
                offset = 10
            masked = second & 0x80
            end = offset + (4 if masked else 0) + length
            if len(buffer) < end:
                break
            payload = buffer[end - length : end]
            if masked:
                mask = buffer[offset : offset + 4]
                key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
                payload = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
            buffer = buffer[end:]
            opcode = first & 0x0F
            if opcode == 0x8:  # close: answer it and hang up
                out.append(b"\x88\x02\x03\xe8")
                self.transport.write(b"".join(out))
                self.transport.close()
                return b""
            if opcode == 0x9:  # ping -> pong
                first = 0x8A
            elif opcode == 0xA:  # pong: nothing to do
                continue
            header = (
                bytes((first, length))
                if length < 126
                else bytes((first, 126)) + length.to_bytes(2, "big")
                if length < 65536
                else bytes((first, 127)) + length.to_bytes(8, "big")
            )
            out.append(header + payload)
        if out:
            self.transport.write(b"".join(out))
        return buffer


async def _serve_ceiling(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CeilingProtocol, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


# -- the WebSocket load generator --------------------------------------------------------------

_MASK = b"\x37\xfa\x21\x3d"


def _masked_frame(opcode: int, payload: bytes, mask: bytes = _MASK) -> bytes:
    """One client frame (FIN set, masked); payloads under 126 bytes."""
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


class _Load:
    """Shared state of one load-generator process."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.measuring = False
        self.stopping = False
        self.roundtrips = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []


class WSLoadProtocol(asyncio.Protocol):
    """One client connection: handshake, then send a frame / wait for its echo, repeatedly."""

    def __init__(self, load: _Load, request: bytes, active: bool) -> None:
        self.load = load
        self.request = request
        self.active = active
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.open = False
        self.sent_at = 0.0
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"lost before the handshake: {exc}"))
        elif not self.load.stopping:
            self.load.errors.append(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.load.frame)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                status = buffer.split(b"\r\n", 1)[0].decode("latin-1")
                self.handshake.set_exception(ConnectionError(f"handshake refused: {status}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            self.handshake.set_result(None)
            buffer = buffer[end + 4 :]
            if self.active:
                self._send()
        load = self.load
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length = int.from_bytes(buffer[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length = int.from_bytes(buffer[2:10], "big")
                offset = 10
            if len(buffer) < offset + length:
                break
            opcode = buffer[0] & 0x0F
            payload = buffer[offset : offset + length]
            buffer = buffer[offset + length :]
            assert self.transport is not None
            if opcode in (0x1, 0x2):
                if load.measuring:
                    load.roundtrips += 1
                    load.latencies.append(time.perf_counter() - self.sent_at)
                if not load.stopping:
                    self._send()
            elif opcode == 0x9:
                self.transport.write(_masked_frame(0xA, payload[:125], b"\0\0\0\0"))
            elif opcode == 0x8:
                if not load.stopping:
                    load.errors.append(f"server closed: {payload[:2].hex()}")
                self.transport.close()
        self.buffer = buffer

    def close(self) -> None:
        """Send a close frame; the server closes the TCP connection after answering."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked_frame(0x8, b"\x03\xe8"))


async def _wsload(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load = _Load(_masked_frame(0x1, args.message.encode()))
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(32)  # handshakes in flight: stay under small listen backlogs
    clients: list[WSLoadProtocol] = []

    async def connect() -> None:
        async with gate:
            _, protocol = await loop.create_connection(
                lambda: WSLoadProtocol(load, request, not args.idle), args.host, args.port
            )
            clients.append(protocol)
            await asyncio.wait_for(protocol.handshake, args.timeout)

    started = time.perf_counter()
    results = await asyncio.gather(
        *(connect() for _ in range(args.connections)), return_exceptions=True
    )
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    report: dict[str, Any] = {
        "connections": args.connections - len(failed),
        "failed": len(failed),
        "connect_seconds": time.perf_counter() - started,
        "failures": sorted(set(failed))[:5],
    }
    if args.idle:
        print(json.dumps(report), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
    else:
        await asyncio.sleep(args.warmup)
        load.measuring = True
        started = time.perf_counter()
        await asyncio.sleep(args.duration)
        load.measuring = False
        elapsed = time.perf_counter() - started
        latencies = sorted(load.latencies)
        report.update(
            roundtrips=load.roundtrips,
            seconds=elapsed,
            rate=load.roundtrips / elapsed,
            p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else None,
            p99_ms=latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
        )
    load.stopping = True
    for client in clients:
        client.close()
    await asyncio.wait([asyncio.ensure_future(c.closed) for c in clients], timeout=2)
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    report["errors"] = len(load.errors)
    report["error_samples"] = sorted(set(load.errors))[:5]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.apps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["ceiling", "wsload"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    load = parser.add_argument_group("wsload")
    load.add_argument("--connections", type=int, default=64)
    load.add_argument("--duration", type=float, default=8.0, help="seconds counted")
    load.add_argument("--warmup", type=float, default=1.0, help="seconds before counting")
    load.add_argument("--path", default="/ws")
    load.add_argument("--message", default="Hello, world!")
    load.add_argument("--timeout", type=float, default=30.0, help="per handshake")
    load.add_argument("--idle", action="store_true", help="hold idle connections until EOF")
    load.add_argument("--no-uvloop", action="store_true", help="plain asyncio in the client")
    args = parser.parse_args(argv)
    if args.command == "ceiling":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_ceiling(args.host, args.port))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner: Callable[..., Any] = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    print(json.dumps(runner(_wsload(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
