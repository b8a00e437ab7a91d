"""RedisChannelLayer: the conformance suite on one real redis-server, on three shards and
through a real Sentinel, plus what only Redis promises (sharding, faults, encryption at rest)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.support.waiting import WAIT
from towpath.config import LayerSettings, build_layer
from towpath.layers.base import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    LayerConnectionError,
)
from towpath.layers.redis import RedisChannelLayer
from towpath.layers.redis.hosts import shard_for
from towpath.testing import ChannelLayerConformance
from towpath.testing.services import RedisServer, RedisServerFactory

pytestmark = pytest.mark.redis


class TestRedisConformance(ChannelLayerConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.hosts = [redis_server.url]

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=self.hosts, **config)


class TestShardedRedisConformance(ChannelLayerConformance):
    unsupported = {
        "test_receive_many_is_fair": (
            "channels on different shards are fetched by separate readers, one round trip per "
            "waiting receiver; when one shard answers slower (a first connection, a busy "
            "server), several calls in a row are served by the faster one before the slower "
            "one's reply lands. No channel is starved, but ten in a row need not mix"
        )
    }

    @pytest.fixture(autouse=True)
    def _servers(self, redis_server_factory: RedisServerFactory) -> None:
        self.hosts = [redis_server_factory().url for _ in range(3)]

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=self.hosts, **config)


class TestSentinelRedisConformance(ChannelLayerConformance):
    @pytest.fixture(autouse=True)
    def _sentinel(self, redis_server_factory: RedisServerFactory) -> None:
        master = redis_server_factory()
        sentinel = redis_server_factory.sentinel(master, "towpath-master")
        self.host = {
            "sentinels": [(sentinel.host, sentinel.port)],
            "master_name": "towpath-master",
        }

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[self.host], **config)


# -- what only the Redis layer promises ---------------------------------------------------------


async def _raw_keys(url: str, pattern: str = "*") -> list[bytes]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return [key async for key in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()


async def _receive(layer: RedisChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_process_channels_reach_their_shard_from_every_sender(
    redis_server_factory: RedisServerFactory,
) -> None:
    # channels_redis 4.3 hashes the full name on send: with 10 hosts most direct sends to a
    # `!` channel land where its reader never looks. Here every one arrives.
    hosts = [redis_server_factory().url for _ in range(6)]
    owner, sender = RedisChannelLayer(hosts=hosts), RedisChannelLayer(hosts=hosts)
    try:
        channels = [await owner.new_channel(f"p{n}") for n in range(12)]
        for n, channel in enumerate(channels):
            await sender.send(channel, {"type": "direct", "n": n})
        for n, channel in enumerate(channels):
            assert (await _receive(owner, channel))["n"] == n
    finally:
        await owner.close()
        await sender.close()


async def test_names_spread_over_shards_and_readers_watch_all(
    redis_server_factory: RedisServerFactory,
) -> None:
    servers = [redis_server_factory() for _ in range(3)]
    layer = RedisChannelLayer(hosts=[s.url for s in servers], prefix="spread")
    names = [f"jobs-{n}" for n in range(30)]
    try:
        for name in names:
            await layer.send(name, {"type": "job", "name": name})
        for index, server in enumerate(servers):
            keys = {key.decode() for key in await _raw_keys(server.url)}
            assert keys == {f"spread:{n}" for n in names if shard_for(n, 3) == index}
            assert keys, f"shard {index} got no channel: names do not spread"
        got = set()
        for _ in names:
            channel, message = await asyncio.wait_for(layer.receive_many(names), WAIT)
            assert message["name"] == channel
            got.add(channel)
        assert got == set(names)
    finally:
        await layer.close()


async def test_idle_receive_outlives_the_socket_timeout(redis_server: RedisServer) -> None:
    # redis-py 8 times sockets out after 5 s by default; channels_redis then raises on an idle
    # receive. Blocking reads here have no socket timeout and re-issue BLPOP every 5 s.
    owner = RedisChannelLayer(hosts=[redis_server.url])
    sender = RedisChannelLayer(hosts=[redis_server.url])
    try:
        channel = await owner.new_channel()
        waiting = asyncio.ensure_future(owner.receive_many(["idle-normal", channel]))
        done, _ = await asyncio.wait([waiting], timeout=5.5)
        assert not done
        await sender.send(channel, {"type": "late"})
        assert (await asyncio.wait_for(waiting, WAIT))[1] == {"type": "late"}
    finally:
        await owner.close()
        await sender.close()


async def test_redis_restart_mid_traffic(redis_server: RedisServer) -> None:
    config: dict[str, Any] = {"hosts": [redis_server.url], "retry_timeout": 1.0}
    owner, sender = RedisChannelLayer(**config), RedisChannelLayer(**config)
    try:
        reply = await owner.new_channel()
        for n in range(20):
            await sender.send("work", {"type": "n", "n": n})
            await sender.send(reply, {"type": "n", "n": n})
        for n in range(20):
            assert (await _receive(owner, "work"))["n"] == n
            assert (await _receive(owner, reply))["n"] == n
        # Receivers wait through the outage: their readers must survive it.
        waiting_work = asyncio.ensure_future(owner.receive("work"))
        waiting_reply = asyncio.ensure_future(owner.receive(reply))
        redis_server.kill()
        # The first send finds the connection broken (its fate unknown, so it is not retried);
        # the next one redials with back-off for retry_timeout and gives up, saying why.
        with pytest.raises(LayerConnectionError, match="connection lost|unreachable"):
            await sender.send("work", {"type": "lost"})
        with pytest.raises(LayerConnectionError, match="unreachable for 1 s"):
            await sender.send("work", {"type": "lost"})
        redis_server.restart()
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:  # the first sends after a restart may still meet the broken connection
            try:
                await sender.send("work", {"type": "n", "n": 100})
                break
            except LayerConnectionError:
                assert asyncio.get_running_loop().time() < deadline
        await sender.send(reply, {"type": "n", "n": 100})
        assert (await asyncio.wait_for(waiting_work, WAIT))["n"] == 100
        assert (await asyncio.wait_for(waiting_reply, WAIT))["n"] == 100
        for n in range(101, 121):
            await sender.send(reply, {"type": "n", "n": n})
        assert [(await _receive(owner, reply))["n"] for _ in range(20)] == list(range(101, 121))
    finally:
        await owner.close()
        await sender.close()


async def test_dropped_connections_are_redialled(redis_server: RedisServer) -> None:
    owner, sender = (
        RedisChannelLayer(hosts=[redis_server.url]),
        RedisChannelLayer(hosts=[redis_server.url]),
    )
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        reply = await owner.new_channel()
        await sender.send(reply, {"type": "before"})
        assert (await _receive(owner, reply))["type"] == "before"
        waiting = asyncio.ensure_future(owner.receive(reply))
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            try:
                await sender.send(reply, {"type": "after"})
                break
            except LayerConnectionError:
                assert asyncio.get_running_loop().time() < deadline
        assert (await asyncio.wait_for(waiting, WAIT))["type"] == "after"
    finally:
        await admin.aclose()
        await owner.close()
        await sender.close()


async def test_thousands_of_instances_in_one_loop(redis_server: RedisServer) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    for batch in range(10):
        layers = [RedisChannelLayer(hosts=[redis_server.url]) for _ in range(200)]
        await asyncio.gather(
            *(layer.send(f"many-{batch}", {"type": "x"}) for layer in layers[:100])
        )
        await asyncio.gather(*(layer.close() for layer in layers))
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 5
    reader = RedisChannelLayer(hosts=[redis_server.url], capacity=200)
    try:
        assert (await _receive(reader, "many-9"))["type"] == "x"
    finally:
        await reader.flush()
        await reader.close()


async def test_flush_deletes_only_its_prefix(redis_server: RedisServer) -> None:
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="mine")
    try:
        await admin.set("someone-else:key", "kept")
        await admin.set("mine-not:key", "kept")
        await layer.send("a", {"type": "x"})
        await layer.group_add("g", "a")
        assert len(await _raw_keys(redis_server.url, "mine:*")) == 2
        await layer.flush()
        assert await _raw_keys(redis_server.url, "mine:*") == []
        assert await admin.get("someone-else:key") == b"kept"
        assert await admin.get("mine-not:key") == b"kept"
    finally:
        await admin.aclose()
        await layer.close()


async def test_scripts_forgotten_by_redis_are_loaded_again(redis_server: RedisServer) -> None:
    """SCRIPT FLUSH (what a restarted Redis looks like to EVALSHA): the next sends, pipelined
    together, and a group_send each load their script again and succeed, exactly once."""
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        await layer.send("warm", {"type": "x"})
        await admin.script_flush()
        await asyncio.gather(*(layer.send("s", {"type": "x", "n": n}) for n in range(3)))
        await layer.group_add("g", "s")
        await admin.script_flush()
        await layer.group_send("g", {"type": "x", "n": 3})
        assert [(await _receive(layer, "s"))["n"] for _ in range(4)] == [0, 1, 2, 3]
        assert await admin.llen("asgi:s") == 0
    finally:
        await admin.aclose()
        await layer.flush()
        await layer.close()


async def test_encrypted_messages_are_unreadable_in_redis(redis_server: RedisServer) -> None:
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    layer = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["k"])
    try:
        await layer.send("secret", {"type": "secret.message", "text": "attack at dawn"})
        (stored,) = await admin.lrange("asgi:secret", 0, -1)
        assert b"attack" not in stored
        assert b"secret.message" not in stored
        assert (await _receive(layer, "secret"))["text"] == "attack at dawn"
    finally:
        await admin.aclose()
        await layer.flush()
        await layer.close()


async def test_remote_full_member_is_skipped_counted_and_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    owner = RedisChannelLayer(hosts=[redis_server.url], capacity=1)
    # group_send_timeout=0: skipped at once (waiting: tests/layers/test_layer_group_backpressure.py)
    worker = RedisChannelLayer(hosts=[redis_server.url], capacity=1, group_send_timeout=0)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        busy, idle = await owner.new_channel(), await owner.new_channel()
        for channel in (busy, idle):
            await worker.group_add("room", channel)
        await worker.send(busy, {"type": "backlog"})
        # Full at once, wherever the owner's reader is: the backlog is counted in Redis.
        with pytest.raises(ChannelFull):
            await worker.send(busy, {"type": "refused"})
        with caplog.at_level(logging.INFO, logger="towpath.layers.redis"):
            await worker.group_send("room", {"type": "broadcast"})
        assert worker.stats.group_full == 1
        assert "1 of 2 channels over capacity in group room" in caplog.messages
        assert (await _receive(owner, idle))["type"] == "broadcast"
        assert (await _receive(owner, busy))["type"] == "backlog"
        backlog = f"asgi:{busy.partition('!')[0]}!:backlog"
        deadline = asyncio.get_running_loop().time() + WAIT
        while await admin.hexists(backlog, busy):  # the owner's RELEASE frees it
            assert asyncio.get_running_loop().time() < deadline
        await worker.send(busy, {"type": "accepted"})
        assert (await _receive(owner, busy))["type"] == "accepted"
    finally:
        await admin.aclose()
        await owner.flush()
        await owner.close()
        await worker.close()


async def test_an_event_loop_cannot_read_the_inbox_another_live_loop_reads(
    redis_server: RedisServer,
) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        channel = await layer.new_channel()  # this loop's reader reads its inbox

        async def elsewhere() -> None:  # the same instance, in an event loop of another thread
            await layer.receive(channel)

        with pytest.raises(ChannelLayerError, match="another event loop"):
            await asyncio.to_thread(asyncio.run, elsewhere())
        await layer.send(channel, {"type": "still-here"})
        assert (await _receive(layer, channel))["type"] == "still-here"
    finally:
        await layer.close()


async def test_event_loops_get_inboxes_of_their_own(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        first = await layer.new_channel()
        later = await asyncio.to_thread(asyncio.run, layer.new_channel())
        assert first.partition("!")[0] == f"specific.{layer.client_prefix}"
        assert later.partition("!")[0] == f"specific.{layer.client_prefix}-1"
    finally:
        await layer.close()


async def test_backlog_counts_what_waits_and_nothing_refused_or_expired(
    redis_server: RedisServer,
) -> None:
    config: dict[str, Any] = {"hosts": [redis_server.url], "capacity": 5, "inbox_capacity": 2}
    owner = RedisChannelLayer(**config)
    channel = await owner.new_channel()
    await owner.close()  # nobody reads its inbox now: what is sent waits there
    sender = RedisChannelLayer(**config, expiry=0.5)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    backlog = f"asgi:{channel.partition('!')[0]}!:backlog"
    try:
        await sender.send(channel, {"type": "n", "n": 1})
        await sender.send(channel, {"type": "n", "n": 2})
        with pytest.raises(ChannelFull):  # the inbox as a whole is full (inbox_capacity)
            await sender.send(channel, {"type": "n", "n": 3})
        assert await admin.hget(backlog, channel) == b"2"  # the refused one is not counted
        await asyncio.sleep(1.0)  # both expire (expiry=0.5)
        await sender.send(channel, {"type": "n", "n": 4})  # sheds the expired ones first
        assert await admin.hget(backlog, channel) == b"1"
        assert await admin.llen(f"asgi:{channel.partition('!')[0]}!") == 1
    finally:
        await admin.aclose()
        await sender.flush()
        await sender.close()


def test_bad_configuration_names_the_option() -> None:
    with pytest.raises(InvalidChannelLayerError, match="prefix"):
        RedisChannelLayer(prefix="bad:prefix")
    with pytest.raises(InvalidChannelLayerError, match="hosts entry"):
        RedisChannelLayer(hosts=[3.5])
    with pytest.raises(InvalidChannelLayerError, match="master_name"):
        RedisChannelLayer(hosts=[{"sentinels": [("127.0.0.1", 26379)]}])
    with pytest.raises(InvalidChannelLayerError, match="service_name"):
        RedisChannelLayer(sentinels=[("127.0.0.1", 26379)])
    entry = LayerSettings("default", "towpath.layers.redis.RedisChannelLayer", {"host": "x"})
    with pytest.raises(InvalidChannelLayerError, match="'host'.*did you mean 'hosts'"):
        build_layer(entry)


def test_host_forms_and_fast_channels_sentinel_keywords() -> None:
    layer = RedisChannelLayer(
        hosts=["redis://:pw@10.0.0.1:6379/2", ("10.0.0.2", 6380), {"address": "unix:///s"}]
    )
    assert layer.hosts[0] == {"address": "redis://:pw@10.0.0.1:6379/2"}
    assert layer.hosts[1] == {"host": "10.0.0.2", "port": 6380}
    assert "pw" not in repr(layer)
    sentinel = RedisChannelLayer(
        sentinels=[("10.0.0.3", 26379)], service_name="main", connection_kwargs={"db": 1}
    )
    assert sentinel.hosts == [
        {"sentinels": [("10.0.0.3", 26379)], "master_name": "main", "sentinel_kwargs": {}, "db": 1}
    ]


async def test_drop_in_for_fast_channels_registry(redis_server: RedisServer) -> None:
    from fast_channels.layers import get_channel_layer, register_channel_layer

    layer = RedisChannelLayer(hosts=[redis_server.url])
    register_channel_layer("towpath-chat", layer)  # type: ignore[arg-type]
    try:
        registered = get_channel_layer("towpath-chat")
        assert registered is layer
        channel = await layer.new_channel()
        await layer.group_add("chat", channel)
        await layer.group_send("chat", {"type": "chat.message", "text": "hi"})
        assert (await _receive(layer, channel))["text"] == "hi"
    finally:
        await layer.close()


def test_drop_in_as_django_channels_backend(redis_server: RedisServer, tmp_path: Path) -> None:
    script = tmp_path / "django_drop_in.py"
    script.write_text(
        f"""
import asyncio, django
from django.conf import settings
settings.configure(CHANNEL_LAYERS={{"default": {{
    "BACKEND": "towpath.layers.redis.RedisChannelLayer",
    "CONFIG": {{"hosts": ["{redis_server.url}"], "capacity": 1}},
}}}})
django.setup()
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("chat", channel)
    await layer.group_send("chat", {{"type": "chat.message", "text": "hello"}})
    print(type(layer).__name__, (await layer.receive(channel))["text"])
    await layer.send("full", {{"type": "x"}})
    try:
        await layer.send("full", {{"type": "x"}})
    except ChannelFull:
        print("channels.exceptions.ChannelFull caught")
    await layer.flush()
    await layer.close()

asyncio.run(main())
"""
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "RedisChannelLayer hello",
        "channels.exceptions.ChannelFull caught",
    ]


async def test_continuous_traffic_through_a_crash(redis_server: RedisServer) -> None:
    """A producer and a consumer run while Redis is SIGKILLed and restarted. Nothing crashes;
    what arrives is in order with no duplicates; everything sent after the restart arrives; the
    loss is only what Redis held (or was in flight) when it died."""
    config: dict[str, Any] = {"hosts": [redis_server.url], "retry_timeout": 0.5}
    producer_layer, consumer_layer = RedisChannelLayer(**config), RedisChannelLayer(**config)
    reply = await consumer_layer.new_channel()
    sent: list[int] = []
    failed = 0
    received: list[int] = []
    ambiguous: list[int] = []
    restarted_at: list[int] = []
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal failed
        n = 0
        while not stop.is_set():
            try:
                await producer_layer.send(reply, {"type": "n", "n": n})
                sent.append(n)
            except LayerConnectionError:
                failed += 1
                # it may have been stored and even read before Redis died with its reply
                ambiguous.append(n)
            n += 1
            await asyncio.sleep(0.002)

    async def consume() -> None:
        while True:
            received.append((await consumer_layer.receive(reply))["n"])

    tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(consume())]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while len(received) < 100:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        redis_server.kill()
        while failed == 0:  # the producer has noticed
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        redis_server.restart()
        restarted_at.append(len(sent))
        while len(sent) < restarted_at[0] + 100:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        stop.set()
        await tasks[0]
        while received[-1] != sent[-1]:  # drain what is still on its way
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer_layer.close()
        await consumer_layer.close()
    assert received == sorted(set(received)), "out of order or duplicated"
    assert set(received) <= set(sent) | set(ambiguous)
    after_restart = sent[restarted_at[0] :]
    assert set(after_restart) <= set(received), "lost a message sent after the restart"
    lost = len(sent) - len(received)
    assert lost <= 5, f"lost {lost}: more than could have been in Redis or in flight"


async def test_close_returns_what_a_receive_left_fetched(redis_server: RedisServer) -> None:
    leaving = RedisChannelLayer(hosts=[redis_server.url], prefetch=16)
    staying = RedisChannelLayer(hosts=[redis_server.url])
    try:
        for n in (1, 2, 3):
            await staying.send("jobs", {"type": "job", "n": n})
        # One receive; the fetcher takes all three (prefetch) and hands out the first.
        assert (await _receive(leaving, "jobs"))["n"] == 1
        await leaving.close()  # what it fetched and did not hand out comes back, in order
        got = [(await _receive(staying, "jobs"))["n"] for _ in range(2)]
        assert got == [2, 3]
    finally:
        await leaving.close()
        await staying.flush()
        await staying.close()


def test_async_to_sync_calls_leave_no_connection_open(redis_server: RedisServer) -> None:
    # Django sync views call async_to_sync(layer.group_send)(...): each call runs in a new
    # event loop that is then closed. The layer's connections for it close with it.
    from asgiref.sync import async_to_sync

    layer = RedisChannelLayer(hosts=[redis_server.url])
    fds_before = len(os.listdir("/proc/self/fd"))
    for n in range(5):
        async_to_sync(layer.group_add)("sync-room", "sync-member")
        async_to_sync(layer.group_send)("sync-room", {"type": "n", "n": n})
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1
    assert len(layer._states) == 0
    got = [async_to_sync(layer.receive)("sync-member")["n"] for _ in range(5)]
    assert got == list(range(5))
    async_to_sync(layer.flush)()


def test_async_to_sync_with_and_without_close_pools(redis_server: RedisServer) -> None:
    # Code written for channels_redis: every async_to_sync call runs in a new event loop, and
    # close_pools() at the end of a call releases that loop's connections (or the loop's
    # closing does). Nothing sent is lost in between, `!` channels included.
    from asgiref.sync import async_to_sync

    layer = RedisChannelLayer(hosts=[redis_server.url], capacity=3)

    async def send_and_close(channel: str, message: dict[str, Any]) -> None:
        await layer.send(channel, message)
        await layer.close_pools()

    async def receive_and_close(channel: str) -> dict[str, Any]:
        message = await _receive(layer, channel)
        await layer.close_pools()
        return message

    one = async_to_sync(layer.new_channel)()
    two = async_to_sync(layer.new_channel)()
    async_to_sync(send_and_close)(one, {"type": "one"})
    async_to_sync(layer.send)(two, {"type": "two"})  # without close_pools
    async_to_sync(layer.group_add)("sync-group", one)
    async_to_sync(layer.group_send)("sync-group", {"type": "group"})
    assert async_to_sync(receive_and_close)(two)["type"] == "two"
    assert async_to_sync(receive_and_close)(one)["type"] == "one"
    assert async_to_sync(_receive)(layer, one)["type"] == "group"  # without close_pools
    assert len(layer._states) == 0
    async_to_sync(layer.flush)()


async def test_undecodable_message_is_dropped_and_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["other"])
    layer = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["ours"])
    try:
        await stranger.send("mixed", {"type": "unreadable"})
        await layer.send("mixed", {"type": "readable"})
        with caplog.at_level(logging.WARNING, logger="towpath.layers"):
            assert (await _receive(layer, "mixed"))["type"] == "readable"
        assert "Dropped 1 undecodable entry read from Redis list 'asgi:mixed' (InvalidToken" in (
            caplog.text
        )
        assert layer.stats.undecodable == 1
    finally:
        await stranger.close()
        await layer.flush()
        await layer.close()
