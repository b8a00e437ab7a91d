"""HTTP/1.1 against a running server with real clients: curl (keep-alive reuse, chunked upload,
HEAD), httpx (a streamed SSE response read as it comes), and raw-socket pipelining."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from towpath.testing.server import running_server

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="apt-get install curl")


async def app(scope: Any, receive: Any, send: Any) -> None:
    """/echo: the request body back; /sse: three events, each after the client asked; else
    the path."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/echo":
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message["body"]
            more = message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(body)})
    elif path == "/sse":
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gate = scope["state"]["gate"] if "state" in scope else None
        for i in range(3):
            if gate is not None:
                await gate.get()
            event = f"data: {i}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": path.encode()})


async def run(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, out, err


@needs_curl
async def test_curl_reuses_one_connection_for_several_urls() -> None:
    async with running_server(app) as server:
        code, out, err = await run(
            "curl", "-sv", f"{server.url}/a", f"{server.url}/b", f"{server.url}/c"
        )
    assert code == 0, err
    assert out == b"/a/b/c"
    assert err.count(b"Re-using existing connection") == 2
    assert err.lower().count(b"< server: towpath") == 3


@needs_curl
async def test_curl_chunked_upload(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    async with running_server(app) as server:
        code, out, err = await run(
            "curl",
            "-sv",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            f"@{upload}",
            f"{server.url}/echo",
        )
    assert code == 0, err
    assert b"> Transfer-Encoding: chunked" in err
    assert out == data


@needs_curl
async def test_curl_head() -> None:
    async with running_server(app) as server:
        code, out, err = await run("curl", "-sI", f"{server.url}/twelve-bytes")
    assert code == 0, err
    lines = out.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 200 ok"
    assert b"content-length: 13" in lines


async def test_httpx_reads_a_streamed_sse_response_as_it_comes() -> None:
    gate: asyncio.Queue[None] = asyncio.Queue()

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            scope["state"]["gate"] = gate
        await app(scope, receive, send)

    async with (
        running_server(lifespan_app, lifespan="on") as server,
        httpx.AsyncClient() as client,
    ):
        async with client.stream("GET", f"{server.url}/sse") as response:
            # the head arrived before any event exists
            assert response.headers["transfer-encoding"] == "chunked"
            events = response.aiter_bytes()
            for i in range(3):
                gate.put_nowait(None)  # the next event exists only once we ask for it
                chunk = await asyncio.wait_for(anext(events), 5)
                assert chunk == f"data: {i}\n\n".encode()
        # keep-alive: the same client goes on
        assert (await client.get(f"{server.url}/after")).text == "/after"


async def test_raw_socket_pipelining_answers_in_order() -> None:
    async with running_server(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        requests = (
            b"".join(f"GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for i in range(20))
            + b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nend"
        )
        writer.write(requests)
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert [body.strip() for body in bodies] == [f"/{i}".encode() for i in range(20)] + [b"end"]


async def test_slowloris_is_dropped_with_408_while_others_are_served() -> None:
    async with running_server(app, header_timeout_seconds=0.3) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")  # and never the end of the head
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.url}/other")).text == "/other"
        data = await asyncio.wait_for(reader.read(), 5)  # the server answers and closes
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with running_server(app, keep_alive_timeout_seconds=0.2) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /once HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # until the idle connection is closed
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"/once")
