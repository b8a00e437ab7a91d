"""group_send treats a full member as back-pressure, not loss (issue 18): on the in-memory layer,
Redis (one server; two shards, with the member on the group's shard and on the other one) and
IPC, with real redis-server processes.

A full member is waited for (with the back-off of towpath/layers/backoff.py) until it takes the
message, leaves the group, or ``group_send_timeout`` passes; one given up is *stalled* and not
waited for again while it stays full. ``group_send_timeout=0`` is channels_redis's skip-at-once.
The contract-level case runs in the conformance suite (test_group_send_waits_for_a_full_member).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.waiting import WAIT, until
from towpath.config import LayerSettings, build_layer
from towpath.layers._group_wait import GroupWaits, MemberLeft
from towpath.layers.base import BaseChannelLayer, ChannelFull, InvalidChannelLayerError, LayerStats
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.redis import RedisChannelLayer
from towpath.layers.redis.hosts import shard_for
from towpath.testing.services import RedisServerFactory

#: how long the slow reader takes per message: the pace of the consumer under test
PACE = 0.01


async def read(layer: BaseChannelLayer, channel: str, count: int, pace: float = 0) -> list[int]:
    """``count`` messages of ``channel``, their ``n``, taking ``pace`` seconds over each."""
    got = []
    for _ in range(count):
        got.append((await layer.receive(channel))["n"])
        if pace:
            await asyncio.sleep(pace)
    return got


async def elapsed(call: Any) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(call, WAIT)
    return loop.time() - start


class BackpressureCases:
    """The cases, run on each layer by the subclasses below. ``pair()`` gives the instance
    that reads the members and the one that publishes: two instances of a layer that
    shares channels between them (as two processes would), one for the in-memory layer."""

    shared: ClassVar[bool] = True

    async def make_layer(self, **config: Any) -> BaseChannelLayer:
        raise NotImplementedError

    def group_for(self, channel: str, name: str) -> str:
        """The group name to use for a group whose members live where ``channel`` does."""
        return name

    @contextlib.asynccontextmanager
    async def pair(self, **config: Any) -> AsyncIterator[tuple[BaseChannelLayer, BaseChannelLayer]]:
        reader = await self.make_layer(**config)
        publisher = await self.make_layer(**config) if self.shared else reader
        try:
            yield reader, publisher
        finally:
            await reader.flush()
            for layer in {id(reader): reader, id(publisher): publisher}.values():
                await layer.close()

    async def test_slow_member_gets_every_message_in_order(self) -> None:
        # (a) a member read slowly gets all of three times its capacity, in order, and
        # group_send waits for it rather than skipping: no group_full.
        capacity, count = 4, 12
        async with self.pair(capacity=capacity, group_send_timeout=WAIT) as (reader, publisher):
            slow, quick = await reader.new_channel(), await reader.new_channel()
            group = self.group_for(slow, "paced")
            for channel in (slow, quick):
                await publisher.group_add(group, channel)
            reading = asyncio.gather(
                read(reader, slow, count, pace=PACE), read(reader, quick, count)
            )
            for n in range(count):
                await publisher.group_send(group, {"type": "n", "n": n})
            got_slow, got_quick = await asyncio.wait_for(reading, WAIT)
            assert got_slow == got_quick == list(range(count))
            assert publisher.stats.group_full == 0
            assert publisher.stats.group_send_delayed >= 1  # it did wait for the slow one

    async def test_member_nobody_reads_costs_one_timeout(self) -> None:
        # (b) members nobody reads (a `!` channel and a normal one): the first group_send that
        # finds them full waits group_send_timeout, then skips and counts them; the next ones
        # skip them at once (stalled), while the member that reads gets everything.
        config: dict[str, Any] = {"capacity": 2, "channel_capacity": {"alive.*": 10}}
        async with self.pair(**config, group_send_timeout=0.3) as (reader, publisher):
            dead, alive = await reader.new_channel(), await reader.new_channel("alive")
            group = self.group_for(dead, "deadish")
            for channel in (dead, "nobody-reads", alive):
                await publisher.group_add(group, channel)
            reading = asyncio.ensure_future(read(reader, alive, 6))
            for n in range(2):  # fills the two that nobody reads
                await publisher.group_send(group, {"type": "n", "n": n})
            waited = await elapsed(publisher.group_send(group, {"type": "n", "n": 2}))
            assert 0.29 <= waited < 2.0, waited
            stats = publisher.stats
            assert (stats.group_full, stats.group_send_delayed) == (2, 2)
            took = await elapsed(self.send_range(publisher, group, 3, 6))
            assert took < 0.6, took  # not another 0.3 s per group_send
            assert (stats.group_full, stats.group_send_delayed) == (8, 2)
            assert await asyncio.wait_for(reading, WAIT) == list(range(6))
            assert await read(reader, dead, 2) == [0, 1]
            assert await read(reader, "nobody-reads", 2) == [0, 1]

    @staticmethod
    async def send_range(layer: BaseChannelLayer, group: str, start: int, stop: int) -> None:
        for n in range(start, stop):
            await layer.group_send(group, {"type": "n", "n": n})

    async def test_stalled_member_is_waited_for_again_once_it_has_room(self) -> None:
        async with self.pair(capacity=1, group_send_timeout=0.2) as (reader, publisher):
            member = await reader.new_channel()
            group = self.group_for(member, "revived")
            await publisher.group_add(group, member)
            await self.send_range(publisher, group, 0, 2)  # 1 waited for and given up
            await publisher.group_send(group, {"type": "n", "n": 2})  # stalled: skipped
            stats = publisher.stats
            assert (stats.group_full, stats.group_send_delayed) == (2, 1)
            assert await read(reader, member, 1) == [0]  # it reads again
            # The first group_send that finds room (once the reader's count of what it took
            # has reached the store: a moment later for Redis) delivers and forgets it.
            n, skipped = 3, stats.group_full
            async with asyncio.timeout(WAIT):
                while True:
                    await publisher.group_send(group, {"type": "n", "n": n})
                    if stats.group_full == skipped:
                        break
                    n, skipped = n + 1, stats.group_full
                    await asyncio.sleep(0.01)
            assert stats.group_send_delayed == 1
            # full again: waited for again (no longer stalled), and taken once read
            sending = asyncio.ensure_future(publisher.group_send(group, {"type": "n", "n": 99}))
            await until(lambda: stats.group_send_delayed == 2)
            assert await read(reader, member, 2) == [n, 99]
            await asyncio.wait_for(sending, WAIT)
            assert stats.group_full == skipped

    @pytest.mark.parametrize("through", ["publisher", "reader"])
    async def test_member_discarded_while_waited_for_is_let_go(self, through: str) -> None:
        # (c) group_discard (here or from another instance) ends the wait long before the
        # timeout; the member is not counted as full, and gets nothing more.
        if through == "reader" and not self.shared:
            pytest.skip("one instance: the publisher is the reader")
        config: dict[str, Any] = {"capacity": 1, "channel_capacity": {"alive.*": 10}}
        async with self.pair(**config, group_send_timeout=30) as (reader, publisher):
            member, other = await reader.new_channel(), await reader.new_channel("alive")
            group = self.group_for(member, "leaving")
            for channel in (member, other):
                await publisher.group_add(group, channel)
            await publisher.group_send(group, {"type": "n", "n": 0})
            assert await read(reader, other, 1) == [0]
            sending = asyncio.ensure_future(publisher.group_send(group, {"type": "n", "n": 1}))
            await until(lambda: publisher.stats.group_send_delayed == 1)
            assert await read(reader, other, 1) == [1]
            discarding = publisher if through == "publisher" else reader
            await discarding.group_discard(group, member)
            assert await elapsed(sending) < 2.0  # the next retry at the latest, not 30 s
            assert publisher.stats.group_full == 0
            assert await read(reader, member, 1) == [0]
            await reader.send(member, {"type": "n", "n": -1})  # a marker: nothing in between
            assert await read(reader, member, 1) == [-1]

    async def test_timeout_zero_skips_a_full_member_at_once(self) -> None:
        # (d) channels_redis's behaviour: skipped at once, counted, not waited for.
        async with self.pair(capacity=1, group_send_timeout=0) as (reader, publisher):
            member = await reader.new_channel()
            group = self.group_for(member, "skipping")
            await publisher.group_add(group, member)
            await self.send_range(publisher, group, 0, 4)
            stats = publisher.stats
            assert (stats.group_full, stats.group_send_delayed) == (3, 0)
            assert await read(reader, member, 1) == [0]
            await reader.send(member, {"type": "n", "n": -1})
            assert await read(reader, member, 1) == [-1]


class TestMemoryBackpressure(BackpressureCases):
    shared = False

    async def make_layer(self, **config: Any) -> BaseChannelLayer:
        return InMemoryChannelLayer(**config)


@pytest.mark.redis
class TestRedisBackpressure(BackpressureCases):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server_factory: RedisServerFactory) -> None:
        self.hosts = [redis_server_factory().url]

    async def make_layer(self, **config: Any) -> BaseChannelLayer:
        return RedisChannelLayer(hosts=self.hosts, **config)


@pytest.mark.redis
class TestShardedRedisBackpressure(TestRedisBackpressure):
    """Two shards, each group on the other shard than its members' inbox: the retries ask
    the group's shard (ZSCORE) and then send on the member's."""

    same_shard: ClassVar[bool] = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_server_factory: RedisServerFactory) -> None:
        self.hosts = [redis_server_factory().url for _ in range(2)]

    def group_for(self, channel: str, name: str) -> str:
        inbox = shard_for(channel.partition("!")[0] + "!", 2)
        for n in range(100):
            group = f"{name}-{n}"
            if (shard_for(group, 2) == inbox) == self.same_shard:
                return group
        raise AssertionError("no group name on the wanted shard")  # pragma: no cover


@pytest.mark.redis
class TestShardedSameShardRedisBackpressure(TestShardedRedisBackpressure):
    """Two shards, each group on its members' shard: one script checks and sends."""

    same_shard = True


class TestIPCBackpressure(BackpressureCases):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> None:
        self.directory = str(tmp_path)

    async def make_layer(self, **config: Any) -> BaseChannelLayer:
        from towpath.layers.ipc import IPCChannelLayer

        return IPCChannelLayer(prefix="backpressure", directory=self.directory, **config)


# -- the option ---------------------------------------------------------------------------------

BACKENDS = {
    "towpath.layers.InMemoryChannelLayer": {},
    "towpath.layers.redis.RedisChannelLayer": {"hosts": ["redis://127.0.0.1:1"]},
    "towpath.layers.ipc.IPCChannelLayer": {},
}


def settings(backend: str, tmp_path: Path, **options: Any) -> LayerSettings:
    """A CHANNEL_LAYERS entry for ``backend`` (a Redis layer connects only when used)."""
    extra: dict[str, Any] = {"directory": str(tmp_path)} if "ipc" in backend else {}
    return LayerSettings("default", backend, {**BACKENDS[backend], **extra, **options})


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_group_send_timeout_is_a_config_option(backend: str, tmp_path: Path) -> None:
    configured = build_layer(settings(backend, tmp_path, group_send_timeout=0.5))
    assert configured._group_waits.timeout == 0.5  # type: ignore[attr-defined]
    default = build_layer(settings(backend, tmp_path))
    assert default._group_waits.timeout == 5.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("value", [-1, "5", True, None, float("nan"), float("inf")])
def test_bad_group_send_timeout_names_the_option_and_the_fix(
    backend: str, value: object, tmp_path: Path
) -> None:
    with pytest.raises(InvalidChannelLayerError, match=r"group_send_timeout must be .*0 skips"):
        build_layer(settings(backend, tmp_path, group_send_timeout=value))


# -- GroupWaits on its own: stalled members, with an injected clock ---------------------------


class Clock:
    """Monotonic seconds that pass only when the test says so, or a second per retry."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def never_room(self, channel: str, message: dict[str, Any]) -> None:
        self.now += 1  # the member stays full for a second more: past any short deadline
        raise ChannelFull(channel)


async def test_a_stalled_member_is_forgotten_after_group_expiry() -> None:
    clock, stats = Clock(), LayerStats()
    waits = GroupWaits(0.5, memory=60, clock=clock)
    log = logging.getLogger("test")
    await waits.settle("g", {}, ["a"], 1, clock(), clock.never_room, stats, log)
    assert waits.stalled == {"g": {"a": 1001.0}}
    await waits.settle("g", {}, ["a"], 1, clock(), clock.never_room, stats, log)  # at once
    assert (stats.group_full, stats.group_send_delayed, clock.now) == (2, 1, 1001.0)
    clock.now += 60  # group_expiry later: waited for again
    await waits.settle("g", {}, ["a"], 1, clock(), clock.never_room, stats, log)
    assert (stats.group_full, stats.group_send_delayed) == (3, 2)
    await waits.settle("g", {}, [], 1, clock(), clock.never_room, stats, log)  # it took one
    assert waits.stalled == {}


async def test_stalled_members_are_bounded() -> None:
    clock, stats = Clock(), LayerStats()
    waits = GroupWaits(0.5, memory=60, clock=clock, limit=3)
    log = logging.getLogger("test")
    for name in "abcde":  # one member given up in each of five groups
        await waits.settle(name, {}, ["m"], 1, clock(), clock.never_room, stats, log)
    assert list(waits.stalled) == ["c", "d", "e"]  # the oldest forgotten first
    assert "stalled=3" in repr(waits)


async def test_a_local_discard_ends_the_wait_at_once() -> None:
    # The back-off pauses grow to 0.75 s (rand fixed at its top); a group_discard through
    # the same layer ends the wait in the middle of one, not at the next retry.
    tries = 0

    async def counting(channel: str, message: dict[str, Any]) -> None:
        nonlocal tries
        tries += 1
        raise ChannelFull(channel)

    waits = GroupWaits(30, memory=60, rand=lambda: 1.0)
    stats = LayerStats()
    log = logging.getLogger("test")
    settling = asyncio.ensure_future(
        waits.settle("g", {}, ["a"], 1, waits.clock(), counting, stats, log)
    )
    await until(lambda: tries >= 6)  # the pauses are at their longest now
    waits.left("g", "a")
    assert await elapsed(settling) < 0.3
    assert stats.group_full == 0 and waits.stalled == {}


async def test_a_member_that_left_is_not_counted() -> None:
    async def gone(channel: str, message: dict[str, Any]) -> None:
        raise MemberLeft(channel)

    stats = LayerStats()
    waits = GroupWaits(30, memory=60)
    await waits.settle("g", {}, ["a", "b"], 2, waits.clock(), gone, stats, logging.getLogger("t"))
    assert (stats.group_full, stats.group_send_delayed) == (0, 2)
    assert waits.stalled == {}
