"""examples/framework: the FastAPI app answers the same served in-process (``towpath serve
module:app``) and hosted in workers behind ``towpath serve --settings`` over a real Redis.

Every check runs the real ``towpath`` processes and real clients (httpx, websockets)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.commands import runworker
from tests.support.waiting import WAIT
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(40)]

REPO = Path(__file__).resolve().parents[2]
SETTINGS = str(REPO / "examples" / "framework" / "settings.py")
APP = "examples.framework.app:app"
#: past the server's 256 KiB body chunk, so a worker reads the rest from the request channel
UPLOAD = bytes(range(256)) * 2800


@asynccontextmanager
async def serve_direct() -> AsyncIterator[str]:
    async with towpath_serve(APP, "--port", "0", cwd=REPO) as served:
        yield served.url


@asynccontextmanager
async def serve_in_workers(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    # the example's settings read REDIS_URL, as a deployment would set it
    monkeypatch.setenv("REDIS_URL", redis.url)
    async with (
        towpath_serve("--settings", SETTINGS, "--port", "0", cwd=REPO) as served,
        runworker("--settings", SETTINGS, "--asgi", APP, tag="w", cwd=REPO),
    ):
        yield served.url


@pytest.fixture(params=["direct", pytest.param("workers", marks=pytest.mark.redis)])
async def url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The example app's base URL, in one mode or the other."""
    if request.param == "direct":
        stack = serve_direct()
    else:
        stack = serve_in_workers(request.getfixturevalue("redis_server"), monkeypatch)
    async with stack as base:
        yield base


async def transcript(base: str) -> list[tuple[int, str, Any]]:
    """(status, x-example header, JSON body) of a round of ordinary requests."""
    answers = []
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
        for response in [
            await http.get("/"),
            await http.get("/items/2", params={"upper": "true"}),
            await http.get("/items/9"),
            await http.get("/items/nine"),
            await http.post("/orders", json={"item_id": 3, "quantity": 2}),
            await http.post("/orders", json={"item_id": 3, "quantity": 0}),
            await http.post("/upload", content=UPLOAD),
            await http.get("/nowhere"),
        ]:
            answers.append(
                (response.status_code, response.headers.get("x-example", ""), response.json())
            )
    return answers


@pytest.mark.redis
async def test_both_modes_give_the_same_answers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve_direct() as direct:
        in_process = await transcript(direct)
    async with serve_in_workers(redis_server, monkeypatch) as decoupled:
        in_workers = await transcript(decoupled)

    assert in_workers == in_process
    home, item, missing, not_a_number, order, bad_order, upload, nowhere = in_workers
    # lifespan state reaches the routes in both modes
    assert home == (200, "framework", {"greeting": "ahoy", "items": 3})
    assert item == (200, "framework", {"id": 2, "name": "LOCK"})
    assert missing == (404, "framework", {"detail": "no item 9"})
    assert not_a_number[0] == 422
    assert order == (
        201,
        "framework",
        {"item": "narrowboat", "item_id": 3, "quantity": 2, "note": ""},
    )
    assert bad_order[0] == 422 and bad_order[2]["detail"][0]["loc"] == ["body", "quantity"]
    assert upload == (
        200,
        "framework",
        {"bytes": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()},
    )
    assert nowhere == (404, "framework", {"detail": "Not Found"})


async def test_streaming_arrives_line_by_line(url: str) -> None:
    pause = 0.25
    arrivals: list[tuple[float, bytes]] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=WAIT) as http,
        http.stream("GET", "/countdown", params={"start": 3, "pause": pause}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "content-length" not in response.headers  # streamed, not buffered
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic(), chunk))

    assert b"".join(chunk for _, chunk in arrivals) == b"3\n2\n1\nliftoff\n"
    first = next(at for at, chunk in arrivals if chunk.startswith(b"3\n"))
    last = next(at for at, chunk in arrivals if b"liftoff" in chunk)
    # the app pauses 3 x 0.25 s between the first line and the last; a response buffered
    # whole anywhere on the way would deliver them together
    assert last - first > 0.4, arrivals


async def test_websocket_echo_with_lifespan_state(url: str) -> None:
    ws_url = url.replace("http", "ws", 1)
    async with connect(ws_url + "/ws/echo", open_timeout=WAIT) as ws:
        async with asyncio.timeout(WAIT):
            for number in range(3):
                await ws.send(json.dumps({"n": number}))
                assert json.loads(await ws.recv()) == {"echo": {"n": number}, "greeting": "ahoy"}
            await ws.send(json.dumps({"bye": True}))
            await ws.wait_closed()
    assert (ws.close_code, ws.close_reason) == (4000, "bye")

    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url + "/ws/nowhere", open_timeout=WAIT):
            pass
    assert refused.value.response.status_code == 403
