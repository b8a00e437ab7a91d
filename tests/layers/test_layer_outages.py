"""A layer says when it cannot reach its server (``unreachable_since``, ``outages``), and
``OutageWatch`` turns that into "may silence be judged now?" (issue 17, item 7).

The layers against real servers: a ``redis-server`` killed and started again on its port, a
RabbitMQ URL where nothing listens; ``OutageWatch`` sans-IO, its clock and the layer's state
set by hand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.waiting import until
from towpath.compat import redis_usable
from towpath.layers.base import BaseChannelLayer, LayerConnectionError
from towpath.layers.ipc import IPCChannelLayer
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.outages import RECONNECT_GRACE, OutageWatch, layer_outage
from towpath.layers.rabbitmq import RabbitMQChannelLayer
from towpath.layers.redis import RedisChannelLayer
from towpath.layers.redis.connection import BlockingReader
from towpath.layers.redis.pubsub import RedisPubSubChannelLayer
from towpath.testing.services import RedisServer, free_port


class Reach:
    """What ``OutageWatch`` reads of a layer, set by the test."""

    def __init__(self) -> None:
        self.unreachable_since: float | None = None
        self.outages = 0

    def down(self) -> None:
        self.unreachable_since = 1.0
        self.outages += 1

    def up(self) -> None:
        self.unreachable_since = None


def test_silence_is_judged_only_a_timeout_and_the_grace_after_an_outage() -> None:
    reach = Reach()
    watch = OutageWatch(reach)
    assert not watch.look(10.0) and watch.settled(10.0, 1.0)
    reach.down()
    assert watch.look(11.0) and not watch.settled(11.0, 1.0)
    assert watch.look(20.0) and not watch.settled(20.0, 1.0)  # however long it lasts
    reach.up()
    assert not watch.look(21.0)  # the first look after it: the fresh timeout starts here
    assert not watch.settled(21.0 + 1.0 + RECONNECT_GRACE, 1.0)
    assert watch.settled(21.1 + 1.0 + RECONNECT_GRACE, 1.0)


def test_an_outage_between_two_looks_counts_too() -> None:
    reach = Reach()
    watch = OutageWatch(reach)
    watch.look(10.0)
    reach.down()
    reach.up()
    watch.look(11.0)
    assert not watch.settled(11.0 + 1.0 + RECONNECT_GRACE, 1.0)
    assert watch.settled(11.1 + 1.0 + RECONNECT_GRACE, 1.0)


def test_a_failure_the_caller_saw_counts_as_an_outage_seen() -> None:
    watch = OutageWatch(object())
    watch.look(10.0)
    watch.saw(10.5)  # a read of the layer raised
    assert not watch.look(11.0)
    assert not watch.settled(10.5 + 1.0 + RECONNECT_GRACE, 1.0)
    assert watch.settled(10.6 + 1.0 + RECONNECT_GRACE, 1.0)


def test_an_object_that_does_not_say_is_always_reachable() -> None:
    assert layer_outage(object()) == (None, 0)
    reach = Reach()
    reach.unreachable_since, reach.outages = True, False  # type: ignore[assignment]
    assert layer_outage(reach) == (None, 0)


async def test_layers_without_a_server_are_always_reachable(tmp_path: Path) -> None:
    layers: list[BaseChannelLayer] = [
        InMemoryChannelLayer(),
        IPCChannelLayer(prefix="outages", directory=str(tmp_path)),
    ]
    for layer in layers:
        try:
            await layer.send("outages", {"type": "x"})
            assert (layer.unreachable_since, layer.outages) == (None, 0)
        finally:
            await layer.close()


@pytest.mark.redis
@pytest.mark.parametrize("kind", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_a_redis_layer_says_when_it_lost_its_server(
    redis_server: RedisServer, kind: type[RedisChannelLayer | RedisPubSubChannelLayer]
) -> None:
    layer = kind(hosts=[redis_server.url], retry_timeout=0.3)
    try:
        assert (layer.unreachable_since, layer.outages) == (None, 0)
        await layer.send("outages", {"type": "x"})
        assert (layer.unreachable_since, layer.outages) == (None, 0)
        redis_server.kill()
        before = time.monotonic()
        with pytest.raises(LayerConnectionError):
            await layer.send("outages", {"type": "x"})
        since = layer.unreachable_since
        assert since is not None and before <= since <= time.monotonic()
        assert layer.outages == 1
        with pytest.raises(LayerConnectionError):
            await layer.send("outages", {"type": "x"})
        assert (layer.unreachable_since, layer.outages) == (since, 1)  # the same outage
        redis_server.start()
        await layer.send("outages", {"type": "x"})
        assert (layer.unreachable_since, layer.outages) == (None, 1)
    finally:
        await layer.close()


async def test_a_rabbitmq_layer_says_when_it_cannot_reach_its_broker() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    layer = RabbitMQChannelLayer(url=url, prefix="outages", retry_timeout=0.3)
    try:
        before = time.monotonic()
        with pytest.raises(LayerConnectionError):
            await layer.send("outages", {"type": "x"})
        since = layer.unreachable_since
        assert since is not None and before <= since <= time.monotonic()
        assert layer.outages == 1
    finally:
        await layer.close()


@pytest.mark.redis
async def test_a_reader_whose_connection_the_server_closed_opens_a_new_one(
    redis_server: RedisServer,
) -> None:
    """A blocking reader whose connection Redis closed while the reader did something else
    (a restart while its POP failed) reads on a new connection: no failed BLPOP, no back-off
    pause, while the other side may already be sending to it."""
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        await layer.send("outages", {"type": "x"})  # makes this event loop's shards
        (shard,) = layer._state().shards
        reader = BlockingReader(shard, 1)
        await shard.execute("RPUSH", "outages-key", b"first")
        assert await reader.blpop(["outages-key"]) == (b"outages-key", b"first")
        connection = reader._connection
        assert connection is not None and reader.client_id is not None
        await shard.execute("CLIENT", "KILL", "ID", reader.client_id)
        await until(lambda: not redis_usable(connection), "the socket's EOF", wait=5)
        await shard.execute("RPUSH", "outages-key", b"second")
        assert await reader.blpop(["outages-key"]) == (b"outages-key", b"second")
        await reader.close()
    finally:
        await layer.close()
