"""``towpath serve``: options become one ServerConfig (checked in process, with ``serve``
replaced), and the real command in a subprocess: port 0 reports the bound address, unix socket,
inherited fd, ``TOWPATH_`` environment variables, SIGTERM after an in-flight request, and
startup failures as exit status 3."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from towpath.cli import EXIT_STARTUP_FAILURE, main
from towpath.interface.config import ServerConfig

TOWPATH = str(Path(sys.executable).with_name("towpath"))

APP_SOURCE = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    if scope["path"] == "/slow":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.sleep(0.5)  # work in progress when SIGTERM arrives
        await send({"type": "http.response.body", "body": b"last"})
        return
    if scope["path"] == "/stuck":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.Event().wait()
    body = ("hello %s from %s" % (scope["path"], scope["client"])).encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})

async def failing(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP_SOURCE)
    return tmp_path


# -- option translation (no server) ------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, app_dir: Path) -> list[ServerConfig]:
    configs: list[ServerConfig] = []

    async def fake_serve(app: Any, config: ServerConfig, *, ready: Any = None) -> None:
        configs.append(config)

    monkeypatch.setattr("towpath.interface.server.serve", fake_serve)
    monkeypatch.chdir(app_dir)
    monkeypatch.syspath_prepend(str(app_dir))
    return configs


def test_options_build_one_config(captured: list[ServerConfig]) -> None:
    args = [
        "serve", "cliapp:app", "-b", "127.0.0.1:9001", "-b", "unix:/tmp/x.sock",
        "--ping-interval", "0", "--ws-protocol", "chat", "--ws-protocol", "v2",
        "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1",
        "--root-path", "/api", "--max-connections", "7", "--ws-max-size", "100",
        "--keep-alive-timeout", "2", "--no-http2", "--lifespan", "off",
        "--body-timeout", "3", "--no-ws-per-message-deflate", "--h2-max-concurrent-streams", "9",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert config.binds == ("127.0.0.1:9001", "unix:/tmp/x.sock")
    assert config.ws_ping_interval_seconds is None
    assert config.ws_protocols == ("chat", "v2")
    assert config.proxy_headers and config.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1")
    assert config.root_path == "/api" and config.max_connections == 7
    assert config.max_websocket_message_bytes == 100
    assert config.keep_alive_timeout_seconds == 2 and not config.http2
    assert config.lifespan == "off"
    assert config.body_timeout_seconds == 3 and not config.ws_per_message_deflate
    assert config.h2_max_concurrent_streams == 9


def test_daphne_style_bare_host_takes_the_port(captured: list[ServerConfig]) -> None:
    result = CliRunner().invoke(main, ["serve", "cliapp:app", "-b", "0.0.0.0", "-p", "8123"])
    assert result.exit_code == 0, result.output
    assert captured[0].binds == ("0.0.0.0:8123",)


def test_port_with_a_unix_socket_listens_on_both(captured: list[ServerConfig]) -> None:
    result = CliRunner().invoke(main, ["serve", "cliapp:app", "-u", "/tmp/a.sock", "-p", "0"])
    assert result.exit_code == 0, result.output
    assert captured[0].binds == ("127.0.0.1:0",) and captured[0].unix_socket == "/tmp/a.sock"


def test_environment_variables(captured: list[ServerConfig]) -> None:
    env = {
        "TOWPATH_PORT": "0",
        "TOWPATH_ACCESS_LOG": "-",
        "TOWPATH_WS_PROTOCOL": "a b",
        "TOWPATH_PROXY_HEADERS": "true",
        "TOWPATH_GRACEFUL_TIMEOUT": "3",
    }
    result = CliRunner().invoke(main, ["serve", "cliapp:app"], env=env)
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert config.port == 0 and config.access_log == "-" and config.ws_protocols == ("a", "b")
    assert config.proxy_headers and config.graceful_timeout_seconds == 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "cliapp:app", "--settings", "s"], "give either APP"),
        (["serve", "cliapp:app", "--port", "70000"], "--port"),
        (["serve", "cliapp:app", "--keep-alive-timeout", "0"], "--keep-alive-timeout"),
        (["serve", "cliapp:app", "--root-path", "api/"], "--root-path"),
        (["serve", "cliapp:app", "--ssl-certfile", "c.pem"], "--ssl-keyfile"),
        (["serve", "cliapp:app", "-b", "host:port"], "--bind"),
        (["serve", "cliapp:app", "--http-timeout", "3"], "--settings"),
        (
            ["serve", "cliapp:app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/99"],
            "CIDR",
        ),
    ],
)
def test_bad_options_name_the_option(
    captured: list[ServerConfig], args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not captured


def test_bad_app_path_is_a_startup_failure(captured: list[ServerConfig]) -> None:
    result = CliRunner().invoke(main, ["serve", "nosuchmodule:app"])
    assert result.exit_code == EXIT_STARTUP_FAILURE
    assert "nosuchmodule" in result.output
    result = CliRunner().invoke(main, ["serve", "cliapp:nothing"])
    assert result.exit_code == EXIT_STARTUP_FAILURE


def test_an_app_module_with_a_syntax_error_is_a_startup_failure(
    captured: list[ServerConfig], app_dir: Path
) -> None:
    (app_dir / "brokenapp.py").write_text("def app(:\n")
    result = CliRunner().invoke(main, ["serve", "brokenapp:app"])
    assert result.exit_code == EXIT_STARTUP_FAILURE, result.output
    assert "brokenapp.py" in result.output and not captured


def test_check_still_works_alongside_serve() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "serve" in result.output and "check" in result.output


# -- the real command --------------------------------------------------------------------------


class Served:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url


@asynccontextmanager
async def towpath_serve(
    cwd: Path, *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> AsyncIterator[Served]:
    process = await asyncio.create_subprocess_exec(
        TOWPATH, "serve", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, pass_fds=pass_fds,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        if not line:
            assert process.stderr is not None
            raise AssertionError(f"towpath serve printed nothing: {await process.stderr.read()!r}")
        assert line.startswith("towpath serving on "), line
        yield Served(process, line.split()[-1])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 15)


async def test_serve_on_port_zero_and_sigterm(app_dir: Path) -> None:
    async with towpath_serve(app_dir, "cliapp:app", "--port", "0") as served:
        assert not served.url.endswith(":0")
        async with httpx.AsyncClient() as client:
            response = await client.get(served.url + "/hi")
        assert response.status_code == 200 and response.text.startswith("hello /hi from")
        assert await _stop(served.process) == 0


async def test_sigterm_finishes_the_in_flight_request(app_dir: Path) -> None:
    async with towpath_serve(app_dir, "cliapp:app", "-p", "0") as served:
        host, port = served.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while b"first," not in received:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, received
            received += chunk
        served.process.send_signal(signal.SIGTERM)
        received += await asyncio.wait_for(reader.read(), 10)
        assert b"last" in received
        writer.close()
        assert await asyncio.wait_for(served.process.wait(), 15) == 0


async def test_a_second_signal_cuts_the_graceful_period_short(app_dir: Path) -> None:
    args = ("cliapp:app", "-p", "0", "--graceful-timeout", "60")
    async with towpath_serve(app_dir, *args) as served:
        host, port = served.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while b"first," not in received:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, received
            received += chunk
        served.process.send_signal(signal.SIGTERM)
        assert served.process.stderr is not None
        line = b""
        while b"signal again to force" not in line:
            line = await asyncio.wait_for(served.process.stderr.readline(), 10)
            assert line, "towpath serve ended its log without the shutdown line"
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 10) == 0
        writer.close()


async def test_serve_on_uvloop(app_dir: Path) -> None:
    pytest.importorskip("uvloop")
    async with towpath_serve(app_dir, "cliapp:app", "--port", "0", "--loop", "uvloop") as served:
        async with httpx.AsyncClient() as client:
            response = await client.get(served.url + "/loop")
        assert response.status_code == 200 and response.text.startswith("hello /loop from")
        assert await _stop(served.process) == 0


async def test_serve_on_a_unix_socket(app_dir: Path) -> None:
    path = str(app_dir / "s.sock")
    async with towpath_serve(app_dir, "cliapp:app", "--uds", path) as served:
        assert served.url == f"http+unix://{path}"
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("http://localhost/u")
        assert response.text == "hello /u from None"
        assert await _stop(served.process) == 0


async def test_serve_on_an_inherited_fd_and_env(app_dir: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        env = {"TOWPATH_FD": str(sock.fileno()), "TOWPATH_ACCESS_LOG": "-"}
        async with towpath_serve(app_dir, "cliapp:app", env=env, pass_fds=(sock.fileno(),)) as s:
            assert s.url == f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as client:
                response = await client.get(s.url + "/fd")
            assert response.status_code == 200
            assert await _stop(s.process) == 0
            assert s.process.stdout is not None
            rest = (await s.process.stdout.read()).decode()
            assert '"GET /fd" 200' in rest
    finally:
        sock.close()


async def test_startup_failures_exit_3(app_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        TOWPATH, "serve", "cliapp:failing", "-p", "0", "--lifespan", "on",
        cwd=app_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == EXIT_STARTUP_FAILURE
    assert b"database unreachable" in err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        process = await asyncio.create_subprocess_exec(
            TOWPATH, "serve", "cliapp:app", "-p", str(busy.getsockname()[1]),
            cwd=app_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 15)
    finally:
        busy.close()
    assert process.returncode == EXIT_STARTUP_FAILURE
    assert b"cannot listen" in err and b"--port" in err


def test_hardening_options(captured: list[ServerConfig]) -> None:
    args = [
        "serve", "cliapp:app", "--max-header-count", "50", "--max-header-bytes", "8192",
        "--ws-allowed-origins", "https://a.example, .b.example", "--ws-allowed-origins", "*",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert config.max_header_count == 50 and config.max_header_bytes == 8192
    assert config.ws_allowed_origins == ("https://a.example", ".b.example", "*")
    result = CliRunner().invoke(
        main, ["serve", "cliapp:app"], env={"TOWPATH_WS_ALLOWED_ORIGINS": "https://c.example"}
    )
    assert captured[1].ws_allowed_origins == ("https://c.example",)
    assert captured[1].max_header_count == 100


def test_a_bad_origin_pattern_names_the_option(captured: list[ServerConfig]) -> None:
    result = CliRunner().invoke(
        main, ["serve", "cliapp:app", "--ws-allowed-origins", "https://a.example/path"]
    )
    assert result.exit_code == 2 and not captured
    assert (
        "--ws-allowed-origins: ws_allowed_origins: 'https://a.example/path' is not an origin"
        in (result.output)
    )
