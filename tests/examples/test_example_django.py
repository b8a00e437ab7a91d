"""examples/django: a Django Channels 4 project whose ``CHANNEL_LAYERS`` BACKEND is towpath's
Redis layer, the only line changed from a channels_redis project.

* ``towpath serve chatsite.asgi:application`` (a real process, as daphne would run it): two
  WebSocket clients in a room hear each other through Channels' own consumer and towpath's
  layer; a Django view reaches them through ``channels.layers.get_channel_layer()``. The same
  project also runs with its app hosted in ``towpath runworker``.
* Inside the project (``manage.py shell``), ``get_channel_layer()`` is towpath's layer and its
  ``group_send`` reaches the room's WebSocket clients in the server process.
* The drop-in as docs/redis.md states it: a channels_redis ``CONFIG`` works unchanged and the
  layer API behaves the same; data in Redis is *not* shared between the two (switch a
  deployment as a whole), but they live side by side on one Redis under different prefixes.

Django's settings stay out of the pytest process: the project runs in its own processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.support.commands import runworker
from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(40)]

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django"
ASGI = "chatsite.asgi:application"
SETTINGS = str(PROJECT / "chatsite" / "settings.py")


@asynccontextmanager
async def serve_project(mode: str) -> AsyncIterator[str]:
    """The project served one way or the other (``REDIS_URL`` must be set); its base URL."""
    if mode == "direct":
        async with towpath_serve(ASGI, "--port", "0", cwd=PROJECT) as served:
            yield served.url
        return
    async with (
        towpath_serve("--settings", SETTINGS, "--port", "0", cwd=PROJECT) as served,
        runworker("--settings", SETTINGS, "--asgi", ASGI, tag="w1", cwd=PROJECT),
        runworker("--settings", SETTINGS, "--asgi", ASGI, tag="w2", cwd=PROJECT),
    ):
        yield served.url


@asynccontextmanager
async def chat_client(base: str, room: str) -> AsyncIterator[ClientConnection]:
    # AllowedHostsOriginValidator wants the Origin header a browser would send
    url = base.replace("http", "ws", 1) + f"/ws/chat/{room}/"
    async with connect(url, origin=Origin(base), open_timeout=WAIT) as ws:
        yield ws


async def heard(ws: ClientConnection) -> str:
    async with asyncio.timeout(WAIT):
        message: str = json.loads(await ws.recv())["message"]
    return message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "workers"])
async def test_a_room_chats_through_channels_consumer_and_towpath_layer(
    mode: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)  # the project's settings read it
    async with (
        serve_project(mode) as base,
        chat_client(base, "lobby") as alice,
        chat_client(base, "lobby") as bob,
        chat_client(base, "kitchen") as carol,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
    ):
        await alice.send(json.dumps({"message": "hello from alice"}))
        assert await heard(bob) == "hello from alice"
        assert await heard(alice) == "hello from alice"
        await bob.send(json.dumps({"message": "hi alice"}))
        assert await heard(alice) == "hi alice"
        assert await heard(bob) == "hi alice"

        # another room hears none of it: carol's own message is the first thing she gets
        await carol.send(json.dumps({"message": "anyone?"}))
        assert await heard(carol) == "anyone?"

        # a Django view talks to the room through get_channel_layer()
        response = await http.post("/rooms/lobby/announce", json={"message": "tea is ready"})
        assert response.json() == {"room": "lobby", "sent": "tea is ready"}
        assert await heard(alice) == "[announcement] tea is ready"
        assert await heard(bob) == "[announcement] tea is ready"
        assert (await http.get("/")).text.startswith("Chat rooms are at")

        # Channels' origin check runs: a foreign page may not open the socket
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                base.replace("http", "ws", 1) + "/ws/chat/lobby/",
                origin=Origin("http://evil.example"),
                open_timeout=WAIT,
            ):
                pass
        assert refused.value.response.status_code == 403


SHELL = """
import asyncio
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    print(f"{type(layer).__module__}.{type(layer).__qualname__}")
    mine = await layer.new_channel()
    await layer.group_add("chat_lobby", mine)
    await layer.group_send("chat_lobby", {"type": "chat.message", "message": "from the shell"})
    print((await layer.receive(mine))["message"])
    await layer.group_discard("chat_lobby", mine)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_get_channel_layer_in_the_project_is_towpaths(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with serve_project("direct") as base, chat_client(base, "lobby") as alice:
        shell = await asyncio.create_subprocess_exec(
            sys.executable,
            "manage.py",
            "shell",
            "--verbosity",
            "0",
            "-c",
            SHELL,
            cwd=PROJECT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(WAIT):
            out, err = await shell.communicate()
        assert shell.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            "towpath.layers.redis.core.RedisChannelLayer",
            "from the shell",
        ]
        # the same group_send reached the WebSocket client held by the server process
        assert await heard(alice) == "from the shell"


# -- the drop-in, as docs/redis.md promises it ---------------------------------------------------


def channels_redis_config(url: str, prefix: str) -> dict[str, Any]:
    """A channels_redis CONFIG using every option it has."""
    return {
        "hosts": [{"address": url}],
        "prefix": prefix,
        "expiry": 30,
        "group_expiry": 600,
        "capacity": 5,
        "channel_capacity": {"jobs": 2, re.compile(r"^bulk\..*"): 3},
        "symmetric_encryption_keys": ["a-secret-key-for-this-test-only"],
        "random_prefix_length": 8,
        "serializer_format": "msgpack",
    }


async def scenario(layer: Any) -> list[Any]:
    """What a Channels project does with its layer; returns what it saw."""
    seen: list[Any] = []
    alice, bob = await layer.new_channel(), await layer.new_channel()
    seen.append([channel.startswith("specific.") and "!" in channel for channel in (alice, bob)])
    for member in (alice, bob):
        await layer.group_add("room", member)
    await layer.group_send("room", {"type": "chat.message", "text": "hi", "raw": b"\x00\xff"})
    for member in (alice, bob):
        async with asyncio.timeout(WAIT):
            seen.append(await layer.receive(member))
    await layer.group_discard("room", bob)
    await layer.group_send("room", {"type": "chat.message", "text": "only alice"})
    async with asyncio.timeout(WAIT):
        seen.append(await layer.receive(alice))
    # per-channel capacity (glob and regex), and channels' own ChannelFull
    for channel in ("jobs", "bulk.thumbs"):
        accepted = 0
        while accepted < 10:
            try:
                await layer.send(channel, {"type": "job", "n": accepted})
            except ChannelFull:  # channels.exceptions.ChannelFull, whichever layer
                break
            accepted += 1
        seen.append((channel, accepted))
        async with asyncio.timeout(WAIT):
            seen.append((await layer.receive(channel))["n"])
    with pytest.raises(TypeError):
        await layer.send("bad name!", {"type": "x"})
    seen.append(sorted(layer.extensions))
    return seen


async def test_a_channels_redis_config_works_unchanged_and_behaves_the_same(
    redis_server: RedisServer,
) -> None:
    config = channels_redis_config(redis_server.url, "asgi")
    theirs = ChannelsRedisLayer(**config)
    try:
        expected = await scenario(theirs)
        await theirs.flush()
    finally:
        await theirs.close_pools()
    ours = RedisChannelLayer(**config)
    try:
        assert await scenario(ours) == expected
        await ours.flush()
    finally:
        await ours.close()
    assert expected[0] == [True, True]
    assert expected[-1] == ["flush", "groups"]
    assert expected[4:8] == [("jobs", 2), 0, ("bulk.thumbs", 3), 0]


async def test_side_by_side_with_channels_redis_on_one_redis(redis_server: RedisServer) -> None:
    """docs/redis.md: the two store data differently, so a deployment switches as a whole;
    meanwhile separate prefixes keep them apart on one Redis, and neither's flush touches the
    other's keys."""
    old = ChannelsRedisLayer(hosts=[{"address": redis_server.url}], prefix="legacy")
    new = RedisChannelLayer(hosts=[redis_server.url], prefix="asgi")
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for layer, name in ((old, "old"), (new, "new")):
            await layer.send("jobs", {"type": "job", "by": name})
            member = await layer.new_channel()
            await layer.group_add("room", member)
            await layer.group_send("room", {"type": "chat.message", "by": name})
            async with asyncio.timeout(WAIT):
                assert (await layer.receive(member))["by"] == name
        for layer, name in ((old, "old"), (new, "new")):
            async with asyncio.timeout(WAIT):
                assert (await layer.receive("jobs"))["by"] == name

        await old.send("jobs", {"type": "job", "by": "old"})
        await new.flush()
        assert [key async for key in client.scan_iter("asgi:*")] == []
        async with asyncio.timeout(WAIT):
            assert (await old.receive("jobs"))["by"] == "old"
    finally:
        await old.flush()
        await old.close_pools()
        await new.close()
        await client.aclose()
