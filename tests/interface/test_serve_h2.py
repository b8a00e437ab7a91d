"""HTTP/2 through a real server with real clients: curl (prior knowledge, h2c upgrade, TLS with
ALPN), httpx with ``http2=True``, and h2load for many concurrent streams."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from towpath.testing.server import running_server


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/echo":
        answer = bytes(body)
    elif scope["path"] == "/big":
        answer = b"0123456789abcdef" * (5 * 65536)  # 5 MiB: many windows and frames
    else:
        answer = f"{scope['http_version']} {scope['scheme']} {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(answer)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def run(*command: str, limit_seconds: float = 30.0) -> tuple[int, str, str]:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (apt-get install curl nghttp2-client)")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return {"ca": str(ca_file), "cert": str(cert_file), "key": str(key_file)}


async def test_curl_prior_knowledge() -> None:
    async with running_server(app) as server:
        code, out, err = await run(
            "curl", "-sS", "-i", "--http2-prior-knowledge", server.url + "/pk"
        )
    assert code == 0, err
    assert out.startswith("HTTP/2 200")
    assert out.endswith("2 http /pk")


async def test_curl_big_download_and_h2load_over_tls(tls_files: dict[str, str]) -> None:
    async with running_server(
        app, ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"]
    ) as server:
        code, out, err = await run(
            "curl", "-sS", "--http2", "--cacert", tls_files["ca"], "-o", "-", server.url + "/big"
        )
        assert code == 0, err
        assert len(out) == 5 * 1024 * 1024
        code, out, err = await run(
            "h2load", "-n", "500", "-c", "4", "-m", "10", server.url + "/", limit_seconds=50
        )
    assert code == 0, err
    assert "500 succeeded, 0 failed" in out, out


async def test_curl_h2c_upgrade() -> None:
    async with running_server(app) as server:
        code, out, err = await run("curl", "-sS", "-i", "--http2", server.url + "/up")
    assert code == 0, err
    assert "HTTP/1.1 101 Switching Protocols" in out
    assert "HTTP/2 200" in out
    assert out.endswith("2 http /up")


async def test_curl_tls_alpn_h2(tls_files: dict[str, str]) -> None:
    async with running_server(
        app, ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"]
    ) as server:
        assert server.url.startswith("https://")
        code, out, err = await run(
            "curl", "-sS", "-i", "--http2", "--cacert", tls_files["ca"], server.url + "/tls"
        )
    assert code == 0, err
    assert out.startswith("HTTP/2 200")
    assert out.endswith("2 https /tls")


async def test_httpx_http2_over_tls_with_large_bodies(tls_files: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=tls_files["ca"])
    payload = bytes(range(256)) * 4096  # 1 MiB: many windows' worth each way
    async with (
        running_server(app, ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"]) as server,
        httpx.AsyncClient(http2=True, verify=context) as client,
    ):
        response = await client.get(server.url + "/x")
        assert response.http_version == "HTTP/2"
        assert response.text == "2 https /x"
        echoed = await client.post(server.url + "/echo", content=payload)
        assert echoed.http_version == "HTTP/2"
        assert echoed.content == payload
        many = await asyncio.gather(*(client.get(f"{server.url}/{n}") for n in range(30)))
        assert [r.text for r in many] == [f"2 https /{n}" for n in range(30)]


async def test_httpx_cleartext_prior_knowledge() -> None:
    async with (
        running_server(app) as server,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        response = await client.get(server.url + "/clear")
    assert response.http_version == "HTTP/2"
    assert response.text == "2 http /clear"


async def test_h2load_many_concurrent_streams_without_failures() -> None:
    async with running_server(app) as server:
        code, out, err = await run(
            "h2load", "-n", "2000", "-c", "16", "-m", "10", server.url + "/", limit_seconds=50
        )
    assert code == 0, err
    match = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    assert match is not None, out
    total, done, succeeded, failed = map(int, match.groups())
    assert (total, done, succeeded, failed) == (2000, 2000, 2000, 0), out
