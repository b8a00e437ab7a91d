"""Hypothesis throws malformed HTTP/1.1 at a running server over raw sockets: mutated valid
requests, random bytes, huge heads, bad chunk sizes, odd header names and values. After each
example the server has answered with HTTP (never a 500) or closed, logged no error, and still
answers a normal request."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from towpath.testing.server import running_server

VALID = [
    b"GET /path?x=1 HTTP/1.1\r\nhost: example\r\naccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
]


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok:" + body})
    except OSError:  # ClientDisconnected: the fuzzer hung up first
        pass


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """A server running in its own thread and loop (hypothesis drives blocking sockets)."""
    ready = threading.Event()
    address: list[tuple[str, int]] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with running_server(app, max_header_bytes=8192, max_body_bytes=4096) as running:
            address.append((running.host, running.port))
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    try:
        yield address[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("towpath")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, end our side, read until the server closes (5 s at most)."""
    with socket.create_connection(address, timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server already answered and closed: fine
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def still_serving(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET /alive HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok:"):
            chunk = sock.recv(4096)
            assert chunk, f"closed without answering: {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 127, 255, *range(48, 58)]))
        if action == "insert" or position == len(data):
            data.insert(position, byte)
        elif action == "delete":
            del data[position]
        else:
            data[position] = byte
    return bytes(data)


@st.composite
def bad_chunks(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([b"zz", b"-1", b"", b"ffffffffffffffffffff", b"5;ext", b"5 "]))
    size = draw(st.one_of(st.just(size), st.binary(max_size=12)))
    return (
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        + size
        + b"\r\nhello\r\n0\r\n\r\n"
    )


@st.composite
def odd_headers(draw: st.DrawFn) -> bytes:
    name = draw(st.binary(min_size=0, max_size=20))
    value = draw(st.binary(max_size=40))
    return b"GET / HTTP/1.1\r\nhost: x\r\n" + name + b": " + value + b"\r\n\r\n"


huge_heads = st.integers(8000, 70000).map(
    lambda n: b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * n + b"\r\n\r\n"
)
huge_bodies = st.integers(4097, 20000).map(
    lambda n: b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % n + b"b" * n
)
pipelines = st.lists(st.sampled_from(VALID[:3]), min_size=2, max_size=30).map(b"".join)

inputs = st.one_of(
    mutated(),
    st.binary(max_size=3000),
    bad_chunks(),
    odd_headers(),
    huge_heads,
    huge_bodies,
    pipelines,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=inputs)
def test_malformed_input_never_breaks_the_server(
    server: tuple[str, int], error_log: ErrorLog, data: bytes
) -> None:
    error_log.records.clear()
    answer = exchange(server, data)
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
        assert b"HTTP/1.1 500 " not in answer, answer[:300]
    still_serving(server)
    assert not error_log.records, [record.getMessage() for record in error_log.records]
