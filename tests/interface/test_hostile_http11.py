"""Hostile HTTP/1.1 and WebSocket clients against a real ``towpath serve`` process (direct mode,
and decoupled mode with no worker): request smuggling shapes, oversized heads, bad versions and
chunk sizes, forged proxy headers, foreign WebSocket origins, malformed frames, and a flood past
the file-descriptor limit. Each attack gets its exact status (or close code) and the connection
is closed where it must be; a normal client is served meanwhile, and the server's CPU and
memory stay bounded."""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.waiting import WAIT
from towpath.testing.processes import READY_PREFIX, TOWPATH

APP = """
import json

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    info = json.dumps({
        "path": scope["path"][:40],
        "client": scope["client"],
        "http_version": scope["http_version"],
        "headers": [name.decode() for name, _ in scope["headers"]][:5],
        "body": len(body),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(info)).encode())]})
    await send({"type": "http.response.body", "body": info})
"""


class Served:
    """A ``towpath serve`` process started with ``subprocess`` (so a test may set its limits)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, stderr: Path) -> None:
        self.process = process
        self.url = url
        self.stderr = stderr
        host_port = url.split("://", 1)[1]
        self.address = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))

    def stderr_lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def start_serve(tmp: Path, *args: str, fd_limit: int | None = None) -> Served:
    (tmp / "hostileapp.py").write_text(textwrap.dedent(APP))
    stderr = tmp / "serve.err"

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with stderr.open("wb") as stderr_file:
        process = subprocess.Popen(
            [TOWPATH, "serve", *args, "-p", "0"],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            preexec_fn=limit,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 15)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith(READY_PREFIX):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(f"serve did not start: {line!r}\n{stderr.read_text()}")
    return Served(process, line[len(READY_PREFIX) :].strip(), stderr)


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(15)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
    if served.process.stdout is not None:
        served.process.stdout.close()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_serve(
        tmp_path_factory.mktemp("direct"),
        "hostileapp:app",
        "--proxy-headers",
        "--max-body-bytes",
        "1000000",
        "--ws-allowed-origins",
        "https://chat.example.com",
        "--log-level",
        "warning",
    )
    yield served
    stop(served)


def exchange(served: Served, data: bytes, *, pieces: int = 1) -> tuple[list[bytes], bool]:
    """Send ``data`` (in ``pieces`` writes) and read until the server closes or goes quiet;
    the responses' bodies after each status line and whether the server closed."""
    with socket.create_connection(served.address, timeout=WAIT) as sock:
        step = -(-len(data) // pieces)
        try:
            for start in range(0, len(data), step):
                sock.sendall(data[start : start + step])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the answer is read below
        received = b""
        closed = False
        sock.settimeout(1.0)  # a response still open after a second: the server kept it open
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return [b"HTTP/1.1" + part for part in received.split(b"HTTP/1.1")[1:]], closed


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def served_normally(served: Served) -> None:
    """A normal client (httpx) is served."""
    response = httpx.get(served.url + "/normal", timeout=WAIT)
    assert response.status_code == 200 and response.json()["path"] == "/normal"


H = b"Host: example\r\n"
#: the head of a request the server answers and then closes (so reading it ends at once)
H_CLOSE = b"Host: example\r\nConnection: close\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example\r\n\r\n"

ATTACKS = {
    # RFC 9112 6.1 and 6.3: both framings: an error, and the connection closes
    "content-length-and-chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "content-length-twice-differing": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 5\r\nContent-Length: 45\r\n\r\nhello"
        + SMUGGLED,
        400,
    ),
    "content-length-twice-equal": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "content-length-list": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
        400,
    ),
    "chunked-not-last": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunked-twice": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n",
        400,
    ),
    "unknown-coding-before-chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "transfer-encoding-on-http-1.0": (
        b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n", 400),
    "obs-fold-hiding-transfer-encoding": (
        b"POST / HTTP/1.1\r\n" + H + b"X-A: b\r\n\tTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        400,
    ),
    "bare-lf": (b"GET / HTTP/1.1\n" + b"Host: example\n\n", 400),
    "bare-lf-inside-a-head": (b"GET / HTTP/1.1\r\nHost: example\nX-A: b\r\n\r\n", 400),
    "http-9.9": (b"GET / HTTP/9.9\r\n" + H + b"\r\n", 505),
    "http-2.0-request-line": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "chunk-size-2**64": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabc",
        400,
    ),
    "chunk-size-over-max-body-bytes": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n100000\r\nabc",
        413,
    ),
    "head-17kb": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 17_000 + b"\r\n\r\n", 431),
    "head-65kb": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 65_000 + b"\r\n\r\n", 431),
    "10000-headers": (
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n",
        431,
    ),
    "101-headers": (
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
        431,
    ),
    "target-100kb": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
}


@pytest.mark.parametrize("pieces", [1, 64], ids=["one-read", "many-reads"])
@pytest.mark.parametrize("name", ATTACKS)
def test_attack_gets_its_status_and_a_close(direct: Served, name: str, pieces: int) -> None:
    data, expected = ATTACKS[name]
    responses, closed = exchange(direct, data, pieces=pieces)
    assert [status(response) for response in responses] == [expected], responses
    assert closed, "the connection must close after refusing the request"
    served_normally(direct)


def test_limits_are_limits_not_less(direct: Served) -> None:
    # 100 fields (Host, Connection and 98 more) and a 16 KiB head are still served
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(98))
    [response], _ = exchange(direct, b"GET /a HTTP/1.1\r\n" + H_CLOSE + fields + b"\r\n")
    assert status(response) == 200
    head = b"GET /b HTTP/1.1\r\n" + H_CLOSE + b"X-Big: "
    head += b"a" * (16 * 1024 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 16 * 1024
    [response], _ = exchange(direct, head)
    assert status(response) == 200
    # a chunked body and chunk extensions pass the chunk-size check; pipelined after it, the
    # next request is served too
    chunked = (
        b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n00006\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    responses, _ = exchange(direct, chunked + b"GET /d HTTP/1.1\r\n" + H_CLOSE + b"\r\n", pieces=7)
    assert [status(r) for r in responses] == [200, 200]
    assert body(responses[0])["body"] == 11 and body(responses[1])["path"] == "/d"


def test_a_later_http_1_minor_version_is_served_as_1_1(direct: Served) -> None:
    [response], _ = exchange(direct, b"GET / HTTP/1.2\r\n" + H_CLOSE + b"\r\n")
    assert status(response) == 200 and body(response)["http_version"] == "1.1"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (b"X-Forwarded-For: evil<script>", "127.0.0.1"),
        (b"X-Forwarded-For: 203.0.113.7", "203.0.113.7"),
        (b"X-Forwarded-For: 203.0.113.7, not-an-address", "127.0.0.1"),
        (b'Forwarded: for="evil<x>"', "127.0.0.1"),
        (b'Forwarded: for="[2001:db8::1]:80"', "2001:db8::1"),
    ],
)
def test_forwarded_client_must_be_an_ip_address(
    direct: Served, forwarded: bytes, client: str
) -> None:
    [response], _ = exchange(direct, b"GET / HTTP/1.1\r\n" + H_CLOSE + forwarded + b"\r\n\r\n")
    assert body(response)["client"][0] == client


def test_huge_heads_cost_bounded_cpu_and_memory(direct: Served) -> None:
    attack = ATTACKS["10000-headers"][0]
    cpu, rss = direct.cpu_seconds(), direct.rss_kib()
    for _ in range(40):  # 4.7 MB of headers, each head refused before h11 parses it
        responses, closed = exchange(direct, attack)
        assert [status(r) for r in responses] == [431] and closed
    assert direct.cpu_seconds() - cpu < 2.0
    assert direct.rss_kib() - rss < 20 * 1024
    served_normally(direct)


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def websocket_handshake(served: Served, origin: bytes | None) -> tuple[socket.socket, bytes]:
    key = base64.b64encode(os.urandom(16))
    head = (
        b"GET /ws HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
    )
    if origin is not None:
        head += b"Origin: " + origin + b"\r\n"
    sock = socket.create_connection(served.address, timeout=WAIT)
    sock.sendall(head + b"\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (b"https://chat.example.com", 101),
        (None, 101),  # not a browser
        (b"http://evil.example", 403),
        (b"http://chat.example.com", 403),
        (b"null", 403),
    ],
)
def test_websocket_origin(direct: Served, origin: bytes | None, expected: int) -> None:
    sock, response = websocket_handshake(direct, origin)
    with sock:
        assert status(response) == expected
        if expected == 403:  # the app never saw the connect, and the connection closes
            assert (response + read_to_close(sock)).endswith(b"\r\n\r\nOrigin not allowed")


async def test_websocket_origin_with_the_websockets_client(direct: Served) -> None:
    ws_url = direct.url.replace("http", "ws", 1) + "/ws"
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    async with connect(ws_url, origin="https://chat.example.com") as ws:  # type: ignore[arg-type]
        await ws.ping()


def test_invalid_utf8_closes_1007_with_a_fixed_reason(direct: Served) -> None:
    sock, response = websocket_handshake(direct, b"https://chat.example.com")
    with sock:
        assert status(response) == 101
        sock.sendall(b"\x81\x82\x00\x00\x00\x00\xff\xfe")  # masked text frame, bad UTF-8
        frame = b""
        while len(frame) < 2 or len(frame) < 2 + frame[1]:
            chunk = sock.recv(4096)
            assert chunk, "closed without a close frame"
            frame += chunk
    assert frame[0] == 0x88
    code = struct.unpack("!H", frame[2:4])[0]
    assert (code, frame[4 : 2 + frame[1]]) == (1007, b"invalid frame payload data")


def test_decoupled_mode_refuses_before_any_worker(tmp_path: Path) -> None:
    # no worker runs: a request that reached the layer would wait for --http-timeout
    served = start_serve(
        tmp_path, "--ws-allowed-origins", "https://chat.example.com", "--http-timeout", "30"
    )
    try:
        responses, closed = exchange(served, ATTACKS["content-length-and-chunked"][0])
        assert [status(r) for r in responses] == [400] and closed
        responses, closed = exchange(served, ATTACKS["10000-headers"][0])
        assert [status(r) for r in responses] == [431] and closed
        sock, response = websocket_handshake(served, b"http://evil.example")
        with sock:
            assert status(response) == 403
            read_to_close(sock)
    finally:
        stop(served)


def test_file_descriptor_exhaustion_logs_once_and_recovers(tmp_path: Path) -> None:
    served = start_serve(tmp_path, "hostileapp:app", fd_limit=64)
    flood: list[socket.socket] = []
    try:
        cpu = served.cpu_seconds()
        for _ in range(300):  # past the 64 descriptors the server may hold
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(served.address)
            flood.append(sock)
        deadline = time.monotonic() + WAIT
        while not any("out of file descriptors" in line for line in served.stderr_lines()):
            assert time.monotonic() < deadline, served.stderr_lines()
            select.select([], [], [], 0.05)
        # the flood goes on for a while: asyncio's accept loop would log a traceback per
        # pending connection each time it retried
        select.select([], [], [], 2.0)
        lines = served.stderr_lines()
        assert len(lines) <= 3, lines
        assert "EMFILE, limit 64" in lines[0] and "Traceback" not in "".join(lines)
        assert served.cpu_seconds() - cpu < 1.5
        for sock in flood:
            sock.close()
        flood.clear()
        deadline = time.monotonic() + WAIT
        while True:  # served again once the flood's descriptors are closed
            try:
                served_normally(served)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
    finally:
        for sock in flood:
            sock.close()
        stop(served)


def test_connection_limit_leaves_room_below_the_descriptor_limit() -> None:
    from towpath.interface.accept import connection_limit

    assert connection_limit(64) == 48 and connection_limit(1024) == 960
    assert connection_limit(1_048_576) == 1_048_512 and connection_limit(2) == 2


def test_serve_raises_the_soft_descriptor_limit_to_the_hard_one() -> None:
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "from towpath.interface.accept import raise_fd_limit\n"
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE), hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=WAIT
    ).stdout.split(") ")
    hard = int(out[-1])
    assert out[0] == f"(64, {hard}"
    assert out[1] == f"({hard}, {hard}"
