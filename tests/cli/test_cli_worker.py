"""``towpath runworker`` and ``towpath runserver`` as real processes: a real ``redis-server``,
``towpath serve --settings`` in front, workers split by channel filters, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.support.commands import (
    ROOT,
    chat,
    runserver,
    runworker,
    stop,
    write_settings,
)
from tests.support.waiting import WAIT
from towpath.cli import main
from towpath.testing.processes import towpath_serve


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


@pytest.mark.redis
@pytest.mark.slow
async def test_two_workers_split_by_channel_filters(settings: Path, tmp_path: Path) -> None:
    async with (
        towpath_serve("--settings", str(settings), "--port", "0", cwd=tmp_path) as served,
        runworker(
            "--settings", str(settings), "--only-channels", "http.*", tag="A", cwd=tmp_path
        ) as a,
        runworker(
            "--settings", str(settings), "--exclude-channels", "http.*", tag="B", cwd=tmp_path
        ) as b,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        assert "worker listening on http.request\n" in "".join(a.stderr_lines)
        (listening,) = [line for line in b.stderr_lines if "worker listening on" in line]
        assert "http.request" not in listening and "thumbnail" in listening

        response = await http.get("/hello/there")
        assert (response.status_code, response.text) == (200, "hello there from A")
        # A queues the job; only B serves the thumbnail channel, and answers the client
        response = await http.get("/thumb?id=42")
        assert (response.status_code, response.text) == (200, "thumbnail 42 by B")
        await chat(served.ws_url + "/chat/", "B")

        response = await http.get("/boom")
        assert response.status_code == 500
        async with asyncio.timeout(WAIT):
            line = await a.wait_for_stderr("failed on a 'http.request' message")
            await a.wait_for_stderr("RuntimeError: boom on purpose")
        assert "from channel http.request" in line
        response = await http.get("/hello/again")
        assert (response.status_code, response.text) == (200, "hello again from A")

        assert await stop(a) == 0
        assert await stop(b) == 0


@pytest.mark.redis
@pytest.mark.slow
async def test_sigterm_lets_the_slow_request_finish(settings: Path, tmp_path: Path) -> None:
    async with (
        towpath_serve("--settings", str(settings), "--port", "0", cwd=tmp_path) as served,
        runworker("--settings", str(settings), tag="A", cwd=tmp_path) as worker,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        answer = asyncio.ensure_future(http.get("/slow?s=1.5"))
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("slow started on A")
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("finishing 1 consumer(s) in flight")
            response = await answer
        assert (response.status_code, response.text) == (200, "slow done by A")
        async with asyncio.timeout(WAIT):
            assert await worker.wait() == 0, worker.output()


@pytest.mark.slow
async def test_runserver_serves_the_app_alone(tmp_path: Path) -> None:
    async with (
        runserver("--routing", "tests.support.workerapp:routes", cwd=tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        response = await http.get("/hello/solo")
        assert (response.status_code, response.text) == (200, "hello solo from solo")
        response = await http.get("/thumb?id=1")
        assert response.text == "thumbnail 1 by solo"
        await chat(served.ws_url + "/chat/", "solo")
        assert await stop(served) == 0


@pytest.mark.slow
async def test_runserver_hosts_an_asgi_app(tmp_path: Path) -> None:
    async with (
        runserver("--asgi", "tests.support.workerapp_starlette:app", cwd=tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        response = await http.get("/x")
        assert response.status_code == 404
        response = await http.get("/")
        assert response.text == "hi from solo /"
        assert await stop(served) == 0


# -- refusals ----------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    runner = CliRunner()
    with contextlib.chdir(ROOT):
        return runner.invoke(main, list(args), catch_exceptions=False)


def test_runworker_refuses_the_in_memory_layer(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, "towpath.layers.InMemoryChannelLayer", {})
    result = invoke("runworker", "--settings", str(settings))
    assert result.exit_code == 3
    assert "the in-memory layer cannot cross processes: use towpath runserver" in result.output


@pytest.mark.redis
def test_runworker_refuses_an_empty_channel_list(settings: Path) -> None:
    result = invoke("runworker", "--settings", str(settings), "--only-channels", "nothing.*")
    assert result.exit_code == 3
    assert "no channel of the routing matches --only-channels nothing.*" in result.output
    assert "http.request" in result.output


@pytest.mark.redis
def test_runworker_bad_options(settings: Path) -> None:
    result = invoke("runworker", "--settings", str(settings), "--routing", "a:b", "--asgi", "c:d")
    assert result.exit_code == 2 and "give --routing or --asgi, not both" in result.output
    result = invoke("runworker", "--settings", str(settings), "--routing", "nosuchmodule:routes")
    assert result.exit_code == 3 and "Could not import module 'nosuchmodule'" in result.output
    result = invoke("runworker", "--settings", str(settings), "--concurrency", "0")
    assert result.exit_code == 2 and "--concurrency" in result.output
    result = invoke("runworker", "--settings", str(settings), "--layer", "other")
    assert result.exit_code == 3 and "has no 'other' entry" in result.output


def test_runworker_needs_routing(tmp_path: Path) -> None:
    path = tmp_path / "bare_settings.py"
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer'}}\n"
    )
    result = invoke("runworker", "--settings", str(path))
    assert result.exit_code == 3 and "no routing: pass --routing module:attr" in result.output
