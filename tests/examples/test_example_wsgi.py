"""examples/wsgi: a Flask app behind a2wsgi and a WebSocket consumer in one routing, served by
``towpath runserver`` and by ``towpath serve --settings`` + ``towpath runworker`` over a real
Redis. Real processes, real clients (httpx, websockets)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.commands import runserver, runworker
from tests.support.waiting import WAIT
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(40)]

REPO = Path(__file__).resolve().parents[2]
SETTINGS = str(REPO / "examples" / "wsgi" / "settings.py")
ROUTING = "examples.wsgi.routing:routes"


@asynccontextmanager
async def in_runserver() -> AsyncIterator[str]:
    async with runserver("--routing", ROUTING, cwd=REPO) as served:
        yield served.url


@asynccontextmanager
async def in_workers(redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("REDIS_URL", redis.url)  # the example's settings read it
    async with (
        towpath_serve("--settings", SETTINGS, "--port", "0", cwd=REPO) as served,
        runworker("--settings", SETTINGS, tag="w1", cwd=REPO),
        runworker("--settings", SETTINGS, tag="w2", cwd=REPO),
    ):
        yield served.url


@pytest.fixture(params=["runserver", pytest.param("workers", marks=pytest.mark.redis)])
async def url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The example site's base URL, in one set-up or the other."""
    if request.param == "runserver":
        stack = in_runserver()
    else:
        stack = in_workers(request.getfixturevalue("redis_server"), monkeypatch)
    async with stack as base:
        yield base


async def test_flask_pages_forms_and_redirects(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
        home = await http.get("/")
        assert home.status_code == 200
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        assert '<form method="post" action="/greet">' in home.text

        posted = await http.post("/greet", data={"name": "Ada Lovelace"})
        assert posted.status_code == 302
        assert posted.headers["location"] == "/hello/Ada%20Lovelace"
        followed = await http.post("/greet", data={"name": "Ada Lovelace"}, follow_redirects=True)
        assert followed.status_code == 200
        assert followed.text == "<!doctype html><h1>Hello, Ada Lovelace!</h1>"
        assert [r.status_code for r in followed.history] == [302]

        empty = await http.post("/greet", data={"name": "  "})
        assert empty.status_code == 400 and "Please give a name." in empty.text

        who = await http.get("/whoami", params={"q": "towpath"}, headers={"user-agent": "t/1"})
        assert who.json() == {
            "method": "GET",
            "url": f"{url}/whoami?q=towpath",
            "remote_addr": "127.0.0.1",
            "args": {"q": "towpath"},
            "user_agent": "t/1",
        }

        missing = await http.get("/no/such/page")
        assert missing.status_code == 404 and "Not Found" in missing.text  # Flask's own 404
        wrong_method = await http.get("/greet")
        assert wrong_method.status_code == 405


async def test_a_streamed_wsgi_response(url: str) -> None:
    arrivals: list[tuple[float, bytes]] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=WAIT) as http,
        http.stream("GET", "/report.csv", params={"rows": 3, "pause": 0.25}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic(), chunk))

    assert b"".join(chunk for _, chunk in arrivals) == b"n,square\n1,1\n2,4\n3,9\n"
    first = next(at for at, chunk in arrivals if chunk.startswith(b"n,square"))
    last = next(at for at, chunk in arrivals if b"3,9" in chunk)
    # the generator sleeps 3 x 0.25 s between the header row and the last row: each row left
    # the WSGI app, the worker and the server as it was made
    assert last - first > 0.4, arrivals


async def test_a_websocket_beside_the_wsgi_app(url: str) -> None:
    ws_url = url.replace("http", "ws", 1)
    async with (
        connect(ws_url + "/ws/chat/", open_timeout=WAIT) as alice,
        connect(ws_url + "/ws/chat/", open_timeout=WAIT) as bob,
        httpx.AsyncClient(base_url=url, timeout=WAIT) as http,
    ):
        async with asyncio.timeout(WAIT):
            await alice.send(json.dumps({"name": "alice", "text": "hello"}))
            assert json.loads(await bob.recv()) == {"name": "alice", "text": "hello"}
            assert json.loads(await alice.recv()) == {"name": "alice", "text": "hello"}
            # Flask answers while the sockets are open
            assert (await http.get("/hello/bob")).status_code == 200
            await bob.send(json.dumps({"name": "bob", "text": "hi"}))
            assert json.loads(await alice.recv()) == {"name": "bob", "text": "hi"}
            assert json.loads(await bob.recv()) == {"name": "bob", "text": "hi"}

    # a WebSocket to a path no route takes is refused; it never reaches Flask
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url + "/", open_timeout=WAIT):
            pass
    assert refused.value.response.status_code == 403
