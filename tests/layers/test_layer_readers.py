"""The readers of every layer (``towpath/layers/_readers.py``): the log of undecodable entries
is one line per reader per burst, with counts; a reader task that dies of a bug anyway is logged
with its traceback, started again after a back-off pause, counted in ``stats.reader_restarts``,
and a receive already waiting is served by the new reader without another call. Bugs are
injected by replacing one of the layer's own methods for one call; everything else is real
(redis-server, RabbitMQ, IPC files)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from tests.support.waiting import WAIT, until
from towpath.layers._readers import FIRST_RESTART, MAX_RESTART, ReaderGuard, parse_expiry
from towpath.layers.base import BaseChannelLayer, ChannelFull, LayerStats, non_local_name
from towpath.layers.ipc import IPCChannelLayer
from towpath.layers.ipc.locks import lock, unlock
from towpath.layers.ipc.queues import RECORD_OVERHEAD, QueueFile
from towpath.layers.rabbitmq import RabbitMQChannelLayer
from towpath.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from towpath.layers.redis.pubsub_shard import PubSubShard
from towpath.testing.services import RedisServer

L = TypeVar("L", bound=BaseChannelLayer)
logger = logging.getLogger("test.readers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def once(real: Callable[..., Any], error: str) -> Callable[..., Any]:
    """``real``, except that its first call raises ``RuntimeError(error)`` (the bug)."""
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(error)
        return real(*args, **kwargs)

    return flaky


@contextlib.asynccontextmanager
async def pair(make: Callable[[], L]) -> AsyncIterator[tuple[L, L]]:
    """Two instances of a layer (as two processes would have): a receiver and a sender."""
    receiver, sender = make(), make()
    try:
        yield receiver, sender
    finally:
        await sender.close()
        await receiver.close()


# -- the guard itself, in memory -------------------------------------------------------------


def test_a_flood_of_undecodable_entries_is_one_line_per_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats, clock = LayerStats(), Clock()
    guard = ReaderGuard(stats, logger, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.readers"):
        guard.dropped("list 'a'", "no 13-digit expiry at its head", b"x" * 1000, 3)
        for _ in range(10_000):
            guard.dropped("list 'a'", "no 13-digit expiry at its head", b"x" * 1000)
        guard.dropped("list 'b'", ValueError("not msgpack"), b"\xc1")
        clock.now += 59.9
        guard.dropped("list 'a'", "no 13-digit expiry at its head", b"")
        assert len(caplog.records) == 2
        clock.now += 0.1
        guard.dropped("list 'a'", "no 13-digit expiry at its head", b"y")
    assert stats.undecodable == 3 + 10_000 + 1 + 1 + 1
    first, other, later = (record.getMessage() for record in caplog.records)
    assert first.startswith("Dropped 3 undecodable entries read from list 'a' (no 13-digit")
    assert "b'xxxxxxxx" in first and len(first) < 300  # the entry is quoted, 40 bytes of it
    assert other.startswith("Dropped 1 undecodable entry read from list 'b' (ValueError: not")
    assert "symmetric_encryption_keys" in other
    assert "(no 13-digit expiry at its head: b'y'), and 10001 since the last such line" in later


def test_expiry_is_thirteen_ascii_digits() -> None:
    assert parse_expiry(b"1700000000000rest") == 1_700_000_000.0
    for entry in (b"", b"170000000000", b" 170000000000x", b"+170000000000", b"1_70000000000"):
        assert parse_expiry(entry) is None, entry
    assert parse_expiry(("\u0661" * 13).encode()) is None  # Unicode digits are not ASCII


async def test_a_reader_that_dies_at_once_is_restarted_ever_more_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats, clock = LayerStats(), Clock()
    guard = ReaderGuard(stats, logger, clock=clock)
    with caplog.at_level(logging.ERROR, logger="test.readers"):
        for _ in range(12):
            guard.crashed("reader of x", RuntimeError("bug"), lambda: False)
        clock.now += 61  # it lived a minute before dying again: back to the first pause
        guard.crashed("reader of x", RuntimeError("bug"), lambda: False)
    pauses = [float(r.getMessage().rsplit(" in ", 1)[1].split()[0]) for r in caplog.records]
    assert pauses[:4] == [FIRST_RESTART, 2 * FIRST_RESTART, 4 * FIRST_RESTART, 8 * FIRST_RESTART]
    assert pauses[11] == MAX_RESTART and pauses[12] == FIRST_RESTART
    assert all(record.exc_info is not None for record in caplog.records)  # the traceback
    assert stats.reader_restarts == 0  # restart() started nothing


# -- Redis ---------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_fetcher_that_dies_is_restarted_for_the_waiting_receive(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    two = pair(lambda: RedisChannelLayer(hosts=[redis_server.url], block_seconds=1))
    async with two as (receiver, sender):
        monkeypatch.setattr(receiver, "_demand", once(RedisChannelLayer._demand, "fetcher bug"))
        with caplog.at_level(logging.INFO, logger="towpath.layers.redis"):
            waiting = asyncio.create_task(receiver.receive("jobs"))
            await sender.send("jobs", {"type": "job"})
            assert (await asyncio.wait_for(waiting, WAIT))["type"] == "job"
        assert receiver.stats.reader_restarts == 1
        died = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(died) == 1 and died[0].exc_info is not None
        assert "The Redis fetcher of 'asgi:jobs' died (RuntimeError: fetcher bug)" in (
            died[0].getMessage()
        )


@pytest.mark.redis
async def test_redis_inbox_reader_that_dies_is_restarted_for_the_waiting_receive(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    two = pair(lambda: RedisChannelLayer(hosts=[redis_server.url], block_seconds=1))
    async with two as (receiver, sender):
        dispatch = receiver._dispatch_inbox
        monkeypatch.setattr(receiver, "_dispatch_inbox", once(dispatch, "reader bug"))
        with caplog.at_level(logging.ERROR, logger="towpath.layers.redis"):
            channel = await receiver.new_channel()
            waiting = asyncio.create_task(receiver.receive(channel))
            await sender.send(channel, {"type": "eaten by the bug"})
            await until(lambda: receiver.stats.reader_restarts == 1)
            await sender.send(channel, {"type": "direct"})
            assert (await asyncio.wait_for(waiting, WAIT))["type"] == "direct"
        assert f"The Redis reader of 'asgi:{non_local_name(channel)}' died" in caplog.text
        assert not receiver._state().readers[non_local_name(channel)].done()


@pytest.mark.redis
async def test_a_full_list_with_garbage_at_its_head_takes_sends_again(
    redis_server: RedisServer,
) -> None:
    """The send script sheds expired entries from a full list's head; an entry without an
    expiry (no towpath process wrote it) is shed too, not a script error for the sender."""
    layer = RedisChannelLayer(hosts=[redis_server.url], capacity=2, inbox_capacity=2)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        channel = await layer.new_channel()
        inbox = non_local_name(channel)
        await client.rpush("asgi:full", b"", b"no expiry here")
        await client.rpush(f"asgi:{inbox}", b"garbage", b"%013d" % 0 + channel.encode())
        await layer.send("full", {"type": "n", "n": 1})
        await layer.send(channel, {"type": "n", "n": 2})
        assert await client.lrange("asgi:full", 0, -1) != []  # the message, alone
        assert (await asyncio.wait_for(layer.receive("full"), WAIT))["n"] == 1
        assert (await asyncio.wait_for(layer.receive(channel), WAIT))["n"] == 2
        await layer.send("full", {"type": "n", "n": 3})
        await layer.send("full", {"type": "n", "n": 4})
        with pytest.raises(ChannelFull):
            await layer.send("full", {"type": "n", "n": 5})
    finally:
        await client.aclose()
        await layer.flush()
        await layer.close()


# -- Redis Pub/Sub -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_pubsub_reader_that_dies_is_restarted(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    connected = PubSubShard._connected
    calls = 0

    def connected_then_bug_once(shard: PubSubShard, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        connected(shard, *args, **kwargs)
        calls += 1
        if calls == 1:
            raise RuntimeError("subscription bug")

    monkeypatch.setattr(PubSubShard, "_connected", connected_then_bug_once)
    two = pair(lambda: RedisPubSubChannelLayer(hosts=[redis_server.url]))
    async with two as (receiver, sender):
        with caplog.at_level(logging.ERROR, logger="towpath.layers.redis.pubsub"):
            channel = await receiver.new_channel()  # subscribed by the restarted reader
            waiting = asyncio.create_task(receiver.receive(channel))
            await sender.send(channel, {"type": "published"})
            assert (await asyncio.wait_for(waiting, WAIT))["type"] == "published"
        assert receiver.stats.reader_restarts == 1
        assert "subscription reader died (RuntimeError: subscription bug)" in caplog.text


# -- IPC -----------------------------------------------------------------------------------------


def undecodable(layer: IPCChannelLayer, count: int) -> bool:
    return layer.stats.undecodable == count


def append_unframed(queue: QueueFile, expires_at: float) -> None:
    """A record whose length runs past the end of the queue, as no towpath process writes."""
    record = struct.pack("<IId", 1 << 20, 0, expires_at) + b"x" * 10
    assert len(record) == RECORD_OVERHEAD + 10
    lock(queue.fd, "test")
    try:
        meta = queue._meta_or_create()
        os.pwrite(queue.fd, record, meta.tail)
        meta.tail += len(record)
        meta.count += 1
        queue._write_meta(meta)
    finally:
        unlock(queue.fd)


async def test_ipc_reader_that_fails_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with pair(lambda: IPCChannelLayer(directory=str(tmp_path))) as (receiver, sender):
        channel = await receiver.new_channel()
        monkeypatch.setattr(receiver, "_serve", once(receiver._serve, "wake-up bug"))
        with caplog.at_level(logging.ERROR, logger="towpath.layers.ipc"):
            waiting = asyncio.create_task(receiver.receive(channel))
            await sender.send(channel, {"type": "direct"})
            assert (await asyncio.wait_for(waiting, WAIT))["type"] == "direct"
        assert receiver.stats.reader_restarts == 1
        assert "IPC reader of" in caplog.text and "died (RuntimeError: wake-up bug)" in (
            caplog.text
        )


async def test_ipc_records_that_cannot_be_framed_are_dropped_and_the_queue_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with pair(lambda: IPCChannelLayer(directory=str(tmp_path))) as (receiver, sender):
        own = await receiver.new_channel()
        state = sender._state()
        with caplog.at_level(logging.WARNING, logger="towpath.layers.ipc"):
            for dropped, channel in enumerate(("jobs", own), 1):
                await sender.send(channel, {"type": "n", "n": 1})
                queue: QueueFile | None = (
                    state.queue(channel) if channel == "jobs" else state.inbox(non_local_name(own))
                )
                assert queue is not None
                append_unframed(queue, time.time() + 60)
                assert (await asyncio.wait_for(receiver.receive(channel), WAIT))["n"] == 1
                waiting = asyncio.create_task(receiver.receive(channel))
                # the unframed record is read (dropped) before the next message is sent: a
                # message after it in the file would go with it
                await until(functools.partial(undecodable, receiver, dropped))
                await sender.send(channel, {"type": "n", "n": 2})
                assert (await asyncio.wait_for(waiting, WAIT))["n"] == 2
        assert receiver.stats.undecodable == 2
        assert caplog.text.count("a record running past the end of the queue") == 2


# -- RabbitMQ ------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_rabbitmq_fetcher_that_dies_is_restarted_for_the_waiting_receive(
    rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"towpath-test-{uuid.uuid4().hex[:10]}"
    two = pair(lambda: RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix))
    async with two as (receiver, sender):
        receiving = receiver.receiving
        monkeypatch.setattr(receiving, "_subscribe", once(receiving._subscribe, "consume bug"))
        try:
            with caplog.at_level(logging.ERROR, logger="towpath.layers.rabbitmq"):
                waiting = asyncio.create_task(receiver.receive("jobs"))
                await sender.send("jobs", {"type": "job"})
                assert (await asyncio.wait_for(waiting, WAIT))["type"] == "job"
            assert receiver.stats.reader_restarts == 1
            assert f"The RabbitMQ fetcher of '{prefix}:jobs' died (RuntimeError: consume bug)" in (
                caplog.text
            )
        finally:
            await receiver.flush()
