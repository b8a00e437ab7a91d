"""HTTP/1.1 attacks of ``python -m bench attacks``, over raw sockets.

* :func:`smuggle_cl_te`: ``Content-Length`` and ``Transfer-Encoding: chunked`` together, the
  chunked body empty and a second request (``GET /hidden``) inside the bytes Content-Length
  covers. RFC 9112 6.1: the server may reject it, or use the chunked framing; either way it
  must close the connection after answering. Was the hidden request served?
* :func:`smuggle_dup_cl`: two different ``Content-Length`` values (0, then the length of a
  hidden request that follows); RFC 9112 6.3: 400. Was the hidden request served?
* :func:`head`: an oversized request head written in one piece (a 17 KB or 65 KB header
  value, 10,000 headers, a 100 KB target); the status (431 or 414 or 400 expected).
* :func:`bad_line`: ``HTTP/9.9`` and ``HTTP/2.0`` request lines, a chunk size of 2^64.
* :func:`forwarded_for`: ``X-Forwarded-For: evil<script>`` from a trusted proxy address
  (the server started with its proxy-headers option): the client address the app is given.
* :func:`slowloris`: ``--slowloris-connections`` connections each sending a request head one
  byte every ``--slowloris-interval`` seconds for ``--slowloris-seconds``: what they got.
* :func:`fd_flood`: against a server started under ``ulimit -n --fd-limit``,
  ``--fd-connections`` connections (each sends a GET and holds on) for ``--fd-seconds``; how
  many were answered (log bytes and CPU are the harness's columns; is it served after?).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import time
from typing import Any

from bench.attacks_base import HOST, Outcome, Target, answer_of, exchange, statuses

__all__ = [
    "HEADS",
    "bad_line",
    "fd_flood",
    "forwarded_for",
    "head",
    "slowloris",
    "smuggle_cl_te",
    "smuggle_dup_cl",
]

WAIT_SECONDS = 3.0  # for one answer
_HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def _one(target: Target, request: bytes, wait: float = WAIT_SECONDS) -> Outcome:
    result = exchange(target.port, request, wait=wait)
    details = {"statuses": result.statuses(), "ended": result.ended, "bytes": len(result.data)}
    return Outcome(answer_of(result, wait), result.first_seconds, details)


def _smuggled(target: Target, request: bytes) -> Outcome:
    result = exchange(target.port, request, wait=WAIT_SECONDS)
    outcome = _one_of(result)
    hidden = b"GET /hidden" in result.data
    outcome.answer += "; hidden request SERVED" if hidden else "; hidden not served"
    outcome.details["hidden_served"] = hidden
    return outcome


def _one_of(result: Any) -> Outcome:
    details = {"statuses": result.statuses(), "ended": result.ended, "bytes": len(result.data)}
    return Outcome(answer_of(result, WAIT_SECONDS), result.first_seconds, details)


def smuggle_cl_te(target: Target, options: argparse.Namespace) -> Outcome:
    body = b"0\r\n\r\n" + _HIDDEN
    request = (
        b"POST /first HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%s" % (len(body), body)
    )
    return _smuggled(target, request)


def smuggle_dup_cl(target: Target, options: argparse.Namespace) -> Outcome:
    request = (
        b"POST /first HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_HIDDEN), _HIDDEN)
    )
    return _smuggled(target, request)


def _request(target: bytes = b"/", headers: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: bench\r\n%sConnection: close\r\n\r\n" % (target, headers)


HEADS: dict[str, tuple[str, bytes]] = {
    "17k": ("one 17 KB header", _request(headers=b"X-Big: %s\r\n" % (b"a" * 17_000))),
    "65k": ("one 65 KB header", _request(headers=b"X-Big: %s\r\n" % (b"a" * 65_000))),
    "10k-headers": (
        "10,000 headers (about 120 KB)",
        _request(headers=b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))),
    ),
    "100k-target": ("a 100 KB request target", _request(target=b"/" + b"a" * 100_000)),
}


def head(target: Target, options: argparse.Namespace, which: str) -> Outcome:
    return _one(target, HEADS[which][1])


BAD_LINES = {
    "http-9.9": b"GET / HTTP/9.9\r\nHost: bench\r\n\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\nHost: bench\r\n\r\n",
    "chunk-2^64": (
        b"POST / HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10000000000000000\r\nabc"
    ),
}


def bad_line(target: Target, options: argparse.Namespace, which: str) -> Outcome:
    return _one(target, BAD_LINES[which])


def forwarded_for(target: Target, options: argparse.Namespace) -> Outcome:
    request = _request(b"/client", b"X-Forwarded-For: evil<script>\r\n")
    result = exchange(target.port, request, wait=WAIT_SECONDS)
    outcome = _one_of(result)
    codes = result.statuses()
    if codes and codes[0] == 200:
        seen = result.data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace").strip()
        outcome.answer = f"app sees {seen!r}"
        outcome.details["client"] = seen
    return outcome


# -- many connections ---------------------------------------------------------------------------


async def _slow_client(
    port: int, index: int, options: argparse.Namespace, started: float, until: float
) -> tuple[str, float | None]:
    """One slowloris connection: what it got ("408", "closed", "open", ...) and when."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (OSError, TimeoutError) as exc:
        return f"connect failed ({type(exc).__name__})", None
    got = asyncio.ensure_future(reader.read(4096))
    result: tuple[str, float | None] = ("open", None)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow-%d: " % index)
        # connections start spread over one interval, then send a byte per interval each
        delay = options.slowloris_interval * (index / max(1, options.slowloris_connections))
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            done, _ = await asyncio.wait([got], timeout=min(delay, left))
            if done:
                try:
                    data = got.result()
                except OSError:
                    data = None
                at = time.monotonic() - started
                if data is None:
                    result = ("reset", at)
                elif not data:
                    result = ("closed, no status", at)
                else:
                    codes = statuses(data)
                    result = (str(codes[0]) if codes else "other bytes", at)
                break
            delay = options.slowloris_interval
            writer.write(b"a")
    finally:
        got.cancel()
        writer.transport.abort()
    return result


def slowloris(target: Target, options: argparse.Namespace) -> Outcome:
    async def attack() -> list[tuple[str, float | None]]:
        started = time.monotonic()
        until = started + options.slowloris_seconds
        return await asyncio.gather(
            *(
                _slow_client(target.port, index, options, started, until)
                for index in range(options.slowloris_connections)
            )
        )

    results = asyncio.run(attack())
    counts = collections.Counter(what for what, _at in results)
    times = [at for _what, at in results if at is not None]
    answer = ", ".join(f"{what} x{count}" for what, count in counts.most_common())
    details = {
        "connections": options.slowloris_connections,
        "seconds": options.slowloris_seconds,
        "outcomes": dict(counts),
    }
    return Outcome(answer, statistics.median(times) if times else None, details)


async def _holder(port: int, until: float, answered: list[float], started: float) -> str:
    """One connection of the fd flood: connect, GET, keep the connection until ``until``."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), max(0.1, until - time.monotonic())
        )
    except (OSError, TimeoutError):
        return "no connection"
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        try:
            line = await asyncio.wait_for(reader.readline(), max(0.1, until - time.monotonic()))
        except (OSError, TimeoutError):
            line = None
        if line and line.startswith(b"HTTP/1.1 "):
            answered.append(time.monotonic() - started)
            with_status = line.split()[1].decode()
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            return with_status
        if line is None:
            return "no answer"
        return "closed" if not line else "other bytes"
    finally:
        writer.transport.abort()


def fd_flood(target: Target, options: argparse.Namespace) -> Outcome:
    answered: list[float] = []

    async def attack() -> list[str]:
        started = time.monotonic()
        until = started + options.fd_seconds
        return await asyncio.gather(
            *(_holder(target.port, until, answered, started) for _ in range(options.fd_connections))
        )

    results = asyncio.run(attack())
    counts = collections.Counter(results)
    answer = ", ".join(f"{what} x{count}" for what, count in counts.most_common())
    details = {
        "fd_limit": options.fd_limit,
        "connections": options.fd_connections,
        "seconds": options.fd_seconds,
        "outcomes": dict(counts),
        "last_answer_seconds": max(answered) if answered else None,
    }
    return Outcome(answer, None, details)
