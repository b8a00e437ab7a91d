"""WebSocket attacks of ``python -m bench attacks``, with a raw client (asyncio streams), so
the frames are exactly the ones described (client frames carry an all-zero mask: legal, and
the payload goes out as is).

* :func:`deflate_idle`: ``--ws-idle`` connections offering permessage-deflate, each sending one
  compressed message and getting its echo, then idle: the server's RSS per connection.
* :func:`deflate_bomb`: one compressed binary message that inflates to ``--bomb-mib`` MiB
  of zeros (about 1000:1); RFC 7692 leaves the limit to the server: close 1009 expected.
* :func:`invalid_utf8`: a text message that is not UTF-8 (close 1007 expected, RFC 6455 8.1),
  or a close frame whose reason is not UTF-8 (1007 or 1002 expected); the code and reason
  the server closes with.
* :func:`cross_origin`: a handshake with ``Origin: http://evil.example`` to a server on
  127.0.0.1 (cross-site WebSocket hijacking): accepted (101) or refused (403).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import time
import zlib
from typing import Any

from bench.attacks_base import HOST, MIB, Outcome, Target
from bench.procs import _rss_kib

__all__ = ["cross_origin", "deflate_bomb", "deflate_idle", "invalid_utf8"]

TIMEOUT = 5.0
REASON_CHARS = 40  # of a close reason, in the table
DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits"


class Refused(Exception):
    """The handshake got another answer than 101."""


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A final client frame, masked with the all-zero key."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        size = bytes((0x80 | length,))
    elif length < 65536:
        size = bytes((0x80 | 126,)) + length.to_bytes(2, "big")
    else:
        size = bytes((0x80 | 127,)) + length.to_bytes(8, "big")
    return bytes((first,)) + size + b"\0\0\0\0" + payload


def deflate(payload: bytes) -> bytes:
    """permessage-deflate's compressed form (RFC 7692 7.2.1: the final empty block dropped)."""
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


@functools.cache
def _bomb(mib: int) -> bytes:
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -15)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(mib)]
    data = b"".join(parts) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


async def handshake(
    port: int, *, offer_deflate: bool = False, origin: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[bytes, bytes]]:
    """Open a WebSocket on ``/ws``; the response headers (lower-case names). Refused if the
    status is not 101 (the writer is closed then)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), TIMEOUT)
    lines = [
        b"GET /ws HTTP/1.1",
        b"Host: 127.0.0.1:%d" % port,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if offer_deflate:
        lines.append(b"Sec-WebSocket-Extensions: " + DEFLATE_OFFER)
    if origin is not None:
        lines.append(b"Origin: " + origin)
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    except (asyncio.IncompleteReadError, OSError) as exc:
        writer.transport.abort()
        raise Refused("closed before answering") from exc
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower().encode()] = value.strip().encode()
    status = status_line.split(" ", 2)[1] if " " in status_line else status_line
    if status != "101":
        writer.transport.abort()
        raise Refused(status)
    return reader, writer, headers


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """One server frame: (opcode, RSV1, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, bool(first & 0x40), payload


def _close_text(payload: bytes) -> str:
    if len(payload) < 2:
        return "close (no code)"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode("utf-8", "backslashreplace")
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 3] + "..."
    return f"close {code} {reason!r}" if reason else f"close {code}"


async def _until_close(reader: asyncio.StreamReader, wait: float) -> tuple[str, int]:
    """Read frames until a close frame, the end of the stream or ``wait`` seconds: how it
    ended, and the bytes of data frames (payload as sent) read before."""
    data = 0
    try:
        async with asyncio.timeout(wait):
            while True:
                opcode, _rsv1, payload = await read_frame(reader)
                if opcode == 0x8:
                    return _close_text(payload), data
                if opcode in (0x0, 0x1, 0x2):
                    data += len(payload)
    except TimeoutError:
        return f"open after {wait:g} s", data
    except asyncio.IncompleteReadError:
        return "closed without a close frame", data
    except OSError as exc:
        return f"{type(exc).__name__}", data


def _negotiated(headers: dict[bytes, bytes]) -> bool:
    return b"permessage-deflate" in headers.get(b"sec-websocket-extensions", b"")


# -- idle connections with compression ----------------------------------------------------------


async def _idle_one(
    port: int, gate: asyncio.Semaphore, held: list[asyncio.StreamWriter]
) -> tuple[bool, str | None]:
    """Open one compressed connection, one message and its echo; (deflate?, error)."""
    async with gate:
        try:
            reader, writer, headers = await handshake(port, offer_deflate=True)
        except (Refused, OSError, TimeoutError) as exc:
            return False, f"handshake: {exc or type(exc).__name__}"
        held.append(writer)
        negotiated = _negotiated(headers)
        payload = b"hello, compressed world " * 4
        writer.write(frame(0x1, deflate(payload), rsv1=True) if negotiated else frame(1, payload))
        try:
            opcode, _rsv1, _data = await asyncio.wait_for(read_frame(reader), TIMEOUT)
        except (asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
            return negotiated, f"no echo: {type(exc).__name__}"
        return negotiated, None if opcode == 0x1 else f"answer opcode {opcode}"


def deflate_idle(target: Target, options: argparse.Namespace) -> Outcome:
    count = options.ws_idle

    async def attack() -> tuple[list[tuple[bool, str | None]], float, int]:
        gate = asyncio.Semaphore(32)  # handshakes in flight: under small listen backlogs
        warm: list[asyncio.StreamWriter] = []
        await asyncio.gather(*(_idle_one(target.port, gate, warm) for _ in range(10)))
        for writer in warm:
            writer.transport.abort()
        await asyncio.sleep(0.5)  # the server lets the warm-up connections go
        before = _rss_kib(target.pids())
        held: list[asyncio.StreamWriter] = []
        started = time.monotonic()
        try:
            results = await asyncio.gather(
                *(_idle_one(target.port, gate, held) for _ in range(count))
            )
            opened = time.monotonic() - started
            await asyncio.sleep(0.5)  # what the last handshakes started, finished
            after = _rss_kib(target.pids())
        finally:
            for writer in held:
                writer.transport.abort()
        return results, opened, after - before

    results, opened, grown_kib = asyncio.run(attack())
    deflated = sum(1 for negotiated, _ in results if negotiated)
    errors = [error for _, error in results if error]
    per_connection = grown_kib / count
    answer = f"{per_connection:,.1f} KiB per connection; deflate {deflated}/{count}"
    if errors:
        answer += f"; {len(errors)} failed ({sorted(set(errors))[0]})"
    details = {
        "connections": count,
        "deflate": deflated,
        "kib_per_connection": per_connection,
        "failed": len(errors),
        "errors": sorted(set(errors))[:5],
    }
    return Outcome(answer, opened, details)


# -- one hostile connection ---------------------------------------------------------------------


def _one_connection(
    target: Target, offer_deflate: bool, message: bytes | None, wait: float
) -> tuple[str, float | None, dict[str, Any]]:
    """Handshake, send ``message`` (a whole frame), read until the close: (answer, seconds)."""

    async def attack() -> tuple[str, float | None, dict[str, Any]]:
        try:
            reader, writer, headers = await handshake(target.port, offer_deflate=offer_deflate)
        except Refused as exc:
            return f"handshake refused: {exc}", None, {}
        details: dict[str, Any] = {"deflate": _negotiated(headers)}
        if offer_deflate and not details["deflate"]:
            writer.transport.abort()
            return "permessage-deflate not negotiated", None, details
        try:
            started = time.monotonic()
            if message is not None:
                writer.write(message)
                with contextlib.suppress(OSError):
                    await writer.drain()
            ended, data = await _until_close(reader, wait)
            details["data_bytes_read"] = data
            if data:
                ended = f"echoed ({data:,} bytes on the wire), then {ended}"
            return ended, time.monotonic() - started, details
        finally:
            writer.transport.abort()

    return asyncio.run(attack())


def deflate_bomb(target: Target, options: argparse.Namespace) -> Outcome:
    bomb = _bomb(options.bomb_mib)
    message = frame(0x2, bomb, rsv1=True)
    answer, seconds, details = _one_connection(target, True, message, options.bomb_wait)
    details.update(inflated_mib=options.bomb_mib, compressed_bytes=len(bomb))
    return Outcome(answer, seconds, details)


def invalid_utf8(target: Target, options: argparse.Namespace, where: str) -> Outcome:
    if where == "text":
        message = frame(0x1, b"caf\xc3 \xff\xfe")
    else:
        message = frame(0x8, (1000).to_bytes(2, "big") + b"bye \xff\xfe")
    answer, seconds, details = _one_connection(target, False, message, TIMEOUT)
    return Outcome(answer, seconds, details)


def cross_origin(target: Target, options: argparse.Namespace) -> Outcome:
    async def attack() -> tuple[str, float]:
        started = time.monotonic()
        try:
            _reader, writer, _headers = await handshake(target.port, origin=b"http://evil.example")
        except Refused as exc:
            return f"refused: {exc}", time.monotonic() - started
        writer.transport.abort()
        return "101 accepted", time.monotonic() - started

    answer, seconds = asyncio.run(attack())
    return Outcome(answer, seconds, {"origin": "http://evil.example"})
