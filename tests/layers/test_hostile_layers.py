"""Bytes no towpath process wrote, pushed straight into everything a layer's readers read (issue
17, item 1): the lists of normal channels and a process's inbox in Redis (one server, and two
shards), Pub/Sub channels and a group, IPC queue files and inboxes, RabbitMQ queues and inboxes.

Each run interleaves valid messages (sent by another layer instance) with bad entries from a
seeded random source: empty, short, 13 bytes that are not the expiry digits, a valid expiry
before garbage, a list of channels that are not the reader's, and 1 MiB of garbage. Half are in
the store before the receiver starts (read in batches), half arrive while it waits (read one by
one). Every valid message must arrive, in order, every bad entry must count once in
``stats.undecodable`` (once per channel it names, where one entry legitimately fans out), and
no reader may die (``stats.reader_restarts`` stays 0, and a message sent last still arrives).

The last test is the attack as a user meets it: ``towpath serve`` and one ``towpath
runworker`` on Redis, two poison entries on ``asgi:http.request``, and the next request is
answered at once, with one warning line in the worker's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.commands import runworker, write_settings
from tests.support.waiting import WAIT
from towpath.layers.base import BaseChannelLayer, non_local_name
from towpath.layers.ipc import IPCChannelLayer
from towpath.layers.ipc.queues import channel_hash
from towpath.layers.rabbitmq import RabbitMQChannelLayer
from towpath.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from towpath.layers.serializers import Serializer
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer, RedisServerFactory

SEED = 17
HUGE = 1 << 20

Push = Callable[[], Awaitable[Any]]


@dataclasses.dataclass
class Step:
    """One push: a valid message (``channels`` get ``n``) or a bad entry (``weight``: how many
    times it counts in ``stats.undecodable``)."""

    push: Push
    channels: tuple[str, ...] = ()
    n: int | str = 0
    weight: int = 0


class Entries:
    """The seeded source of bad entries."""

    def __init__(self, serializer: Serializer) -> None:
        self.rng = random.Random(SEED)
        self.serializer = serializer

    def refused(self, size: int | None = None) -> bytes:
        """Random bytes the serializer refuses (the oracle for "undecodable")."""
        size = self.rng.randint(1, 64) if size is None else size
        while True:
            data = self.rng.randbytes(size)
            try:
                self.serializer.deserialize(data)
            except Exception:
                return data

    def short(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 12))

    def not_digits(self, size: int = 13) -> bytes:
        head = bytearray(self.rng.randbytes(size))
        if bytes(head[:13]).isdigit():
            head[0] = ord("x")
        return bytes(head)

    def valid(self) -> bytes:
        """A message that would decode, inside an entry whose framing is wrong."""
        return self.serializer.serialize({"type": "fuzz", "n": -1})


def stamp() -> bytes:
    return b"%013d" % int((time.time() + 60) * 1000)


def interleave(valid: list[Step], bad: list[Step]) -> list[Step]:
    """Valid steps in their order, bad ones shuffled in between (seeded)."""
    rng = random.Random(SEED)
    steps = list(valid)
    for step in bad:
        steps.insert(rng.randint(0, len(steps)), step)
    return steps


async def fuzz(
    receiver: BaseChannelLayer,
    channels: Sequence[str],
    valid: Callable[[str, int | str], Step],
    bad: list[Step],
) -> None:
    """Push ``bad`` among 10 valid messages per channel (half before the receiver starts, half
    while it waits), then one last valid message per channel; check what arrived."""
    steps = interleave([valid(c, n) for n in range(10) for c in channels], bad)
    ends = [valid(c, "end") for c in channels]
    expected: dict[str, list[int | str]] = {c: [] for c in channels}
    for step in [*steps, *ends]:
        for channel in step.channels:
            expected[channel].append(step.n)
    got: dict[str, list[int | str]] = {c: [] for c in channels}
    done = asyncio.Event()

    async def collect() -> None:
        while True:
            channel, message = await receiver.receive_many(channels)
            got[channel].append(message["n"])
            if all(seq and seq[-1] == "end" for seq in got.values()):
                done.set()

    half = len(steps) // 2
    for step in steps[:half]:
        await step.push()
    collector = asyncio.create_task(collect())
    try:
        for step in [*steps[half:], *ends]:
            await step.push()
        async with asyncio.timeout(WAIT):
            await done.wait()
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    assert got == expected
    assert receiver.stats.undecodable == sum(step.weight for step in bad)
    assert receiver.stats.reader_restarts == 0


def message(n: int | str) -> dict[str, Any]:
    return {"type": "fuzz", "n": n}


# -- Redis (one server, two shards) ------------------------------------------------------------


def redis_list_entries(entries: Entries) -> list[bytes]:
    """What is pushed to a normal channel's list: each counts once."""
    return [
        b"",
        entries.short(),
        entries.not_digits(),
        entries.not_digits() + entries.valid(),
        b"+" + stamp()[1:] + entries.valid(),  # int() would read "+123...": not 13 digits
        stamp() + entries.refused(),
        stamp() + entries.refused(HUGE),
    ]


def redis_inbox_entries(entries: Entries, own: str, own2: str) -> list[tuple[bytes, int]]:
    """What is pushed to a process's inbox list, with how often each counts."""
    ours, ours2, valid = own.encode(), own2.encode(), entries.valid()
    return [
        (b"", 1),
        (entries.short(), 1),
        (entries.not_digits(), 1),
        (entries.not_digits() + ours + b" " + valid, 1),
        (stamp() + ours, 1),  # no space after the channel list
        (stamp() + b" " + valid, 1),  # an empty channel list
        (stamp() + b"\xff\xfe " + valid, 1),  # not ASCII
        (stamp() + b"other.abc!x " + valid, 1),  # another process's channel
        (stamp() + ours + b",other.abc!y " + valid, 1),
        (stamp() + ours + b" " + entries.refused(), 1),
        (stamp() + ours + b"," + ours2 + b" " + entries.refused(), 2),  # fans out to two
        (stamp() + ours + b" " + entries.refused(HUGE), 1),
    ]


async def fuzz_redis(
    receiver: RedisChannelLayer, sender: RedisChannelLayer, urls: list[str]
) -> None:
    channels = ["fuzz.a", "fuzz.b"]
    if len(urls) > 1:  # one channel on each shard
        channels = [
            "fuzz.a",
            next(
                f"fuzz.{i}"
                for i in range(100)
                if receiver.consistent_hash(f"fuzz.{i}") != receiver.consistent_hash("fuzz.a")
            ),
        ]
    own, own2 = await receiver.new_channel(), await receiver.new_channel()
    clients = [aioredis.Redis.from_url(url) for url in urls]

    def raw(name: str, entry: bytes, weight: int) -> Step:
        client = clients[receiver.consistent_hash(non_local_name(name))]
        return Step(lambda: client.rpush(f"asgi:{non_local_name(name)}", entry), weight=weight)

    def valid(channel: str, n: int | str) -> Step:
        return Step(lambda: sender.send(channel, message(n)), (channel,), n)

    entries = Entries(receiver._serializer)
    bad = [raw(c, entry, 1) for c in channels for entry in redis_list_entries(entries)]
    bad += [raw(own, entry, weight) for entry, weight in redis_inbox_entries(entries, own, own2)]
    try:
        await fuzz(receiver, [*channels, own, own2], valid, bad)
        state = receiver._state()
        inbox = non_local_name(own)
        assert not state.readers[inbox].done()
        # every message of the ! channels was received or dropped: nothing is left counted,
        # once the last receives' RELEASE (sent at the end of their tick) has run
        backlog = clients[receiver.consistent_hash(inbox)]
        key = f"asgi:{inbox}:backlog"
        async with asyncio.timeout(WAIT):
            while await backlog.hmget(key, [own, own2]) != [None, None]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # a count in Redis: no event to wait on
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("shards", [1, 2], ids=["single", "sharded"])
async def test_redis_readers_drop_what_they_cannot_read(
    redis_server_factory: RedisServerFactory, shards: int
) -> None:
    urls = [redis_server_factory().url for _ in range(shards)]
    receiver = RedisChannelLayer(hosts=urls, block_seconds=1)
    sender = RedisChannelLayer(hosts=urls)
    try:
        await fuzz_redis(receiver, sender, urls)
    finally:
        await sender.close()
        await receiver.close()


# -- Redis Pub/Sub ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_pubsub_reader_drops_what_it_cannot_read(redis_server: RedisServer) -> None:
    receiver = RedisPubSubChannelLayer(hosts=[redis_server.url])
    sender = RedisPubSubChannelLayer(hosts=[redis_server.url])
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        own, own2 = await receiver.new_channel(), await receiver.new_channel()
        await receiver.subscribe("fuzz.a")
        for channel in (own, own2):
            await receiver.group_add("fuzz-group", channel)
        entries = Entries(receiver._serializer)

        def valid(channel: str, n: int | str) -> Step:
            if channel == own2:  # the group reaches both ! channels
                return Step(lambda: sender.group_send("fuzz-group", message(n)), (own, own2), n)
            return Step(lambda: sender.send(channel, message(n)), (channel,), n)

        def raw(key: str, data: bytes, weight: int) -> Step:
            return Step(lambda: client.publish(key, data), weight=weight)

        payloads = [b"", entries.short(), entries.refused(), entries.refused(HUGE)]
        bad = [raw(f"asgi__channel__{c}", p, 1) for c in ("fuzz.a", own) for p in payloads]
        bad += [raw("asgi__group__fuzz-group", p, 2) for p in payloads]  # two members each
        await fuzz(receiver, ["fuzz.a", own, own2], valid, bad)
    finally:
        await client.aclose()
        await sender.close()
        await receiver.close()


# -- IPC ---------------------------------------------------------------------------------------


async def test_ipc_readers_drop_what_they_cannot_read(tmp_path: Path) -> None:
    receiver = IPCChannelLayer(directory=str(tmp_path))
    sender = IPCChannelLayer(directory=str(tmp_path))
    try:
        own, own2 = await receiver.new_channel(), await receiver.new_channel()
        inbox = non_local_name(own)
        state = sender._state()
        entries = Entries(receiver._serializer)
        limit, far = sender.queue_bytes, 10_000

        def valid(channel: str, n: int | str) -> Step:
            return Step(lambda: sender.send(channel, message(n)), (channel,), n)

        def record(channel: str, data: bytes) -> Step:
            async def push() -> None:
                queue = state.queue(channel)
                queue.push(data, time.time() + 60, far, limit, time.time(), state.waker)

            return Step(push, weight=1)

        def delivery(names: list[str], data: bytes, weight: int) -> Step:
            async def push() -> None:
                queue = state.inbox(inbox)
                assert queue is not None
                caps = [far] * len(names)
                queue.deliver(names, caps, data, time.time() + 60, far, limit, state.waker)

            return Step(push, weight=weight)

        payloads = [b"", entries.short(), entries.refused(), entries.refused(HUGE)]
        bad = [record("fuzz.a", p) for p in payloads]
        valid_data = entries.valid()
        bad += [
            *(delivery([own], p, 1) for p in payloads),
            delivery([own, own2], entries.refused(), 2),
            delivery(["élan.x!y"], valid_data, 1),  # not ASCII
            delivery(["other.abc!x"], valid_data, 1),
            delivery([own, "other.abc!y"], valid_data, 1),
            delivery([""], valid_data, 1),
        ]
        await fuzz(receiver, ["fuzz.a", own, own2], valid, bad)
        table = receiver._state().own[inbox].backlog()
        assert channel_hash(own) not in table and channel_hash(own2) not in table
    finally:
        await sender.close()
        await receiver.close()


# -- RabbitMQ ------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_rabbitmq_readers_drop_what_they_cannot_read(rabbitmq_url: str) -> None:
    prefix = f"towpath-test-{uuid.uuid4().hex[:10]}"
    receiver = RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix)
    sender = RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix)
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        own = await receiver.new_channel()
        await sender.send("fuzz.a", message("first"))  # declares the queue
        assert (await asyncio.wait_for(receiver.receive("fuzz.a"), WAIT))["n"] == "first"
        entries = Entries(receiver._serializer)
        ours, valid_data = own.encode(), entries.valid()

        def valid(name: str, n: int | str) -> Step:
            return Step(lambda: sender.send(name, message(n)), (name,), n)

        def raw(queue: str, body: bytes) -> Step:
            publish = channel.default_exchange.publish
            return Step(lambda: publish(aio_pika.Message(body), routing_key=queue), weight=1)

        queue, inbox = receiver.queue_of("fuzz.a"), receiver.inbox_of(own)
        bad = [
            raw(queue, body)
            for body in [
                b"",
                entries.short(),
                entries.not_digits() + b" " + valid_data,
                stamp() + b"x" * 20,  # no space after the expiry (and tag)
                stamp() + b" " + entries.refused(),
                stamp() + b" " + entries.refused(HUGE),
            ]
        ]
        bad += [
            raw(inbox, body)
            for body in [
                b"",
                entries.short(),
                entries.not_digits() + b" " + valid_data,
                stamp() + b"x" * 20,
                stamp() + b"other.zz!x " + valid_data,  # another process's channel
                stamp() + b"\xff" + entries.short().replace(b" ", b"") + b" " + valid_data,
                stamp() + b"+fuzz-group,other.zz!x ",  # a membership of another's channel
                stamp() + b"+bad group!," + ours + b" ",
                stamp() + b"#+\xff ",
                stamp() + ours + b" " + entries.refused(),
                stamp() + ours + b" " + entries.refused(HUGE),
            ]
        ]
        await fuzz(receiver, ["fuzz.a", own], valid, bad)
        fetcher = receiver._state().fetchers["fuzz.a"]
        assert fetcher.task is not None and not fetcher.task.done()
    finally:
        await connection.close()
        with contextlib.suppress(Exception):
            await receiver.flush()
        await sender.close()
        await receiver.close()


# -- the whole stack: two poison entries on http.request ---------------------------------------


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, url: str) -> AsyncIterator[tuple[Any, Any, httpx.AsyncClient]]:
    settings = write_settings(tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [url]})
    async with (
        towpath_serve("--settings", str(settings), "--port", "0", cwd=tmp_path) as served,
        runworker("--settings", str(settings), tag="W", cwd=tmp_path) as worker,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        yield served, worker, http


@pytest.mark.redis
@pytest.mark.slow
async def test_poison_entries_on_http_request_cost_one_warning(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with stack(tmp_path, redis_server.url) as (_served, worker, http):
        assert (await http.get("/hello/before")).text == "hello before from W"
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.rpush("asgi:http.request", b"", b"not-an-expiry" + b"x" * 40)
        finally:
            await client.aclose()
        started = time.monotonic()
        response = await http.get("/hello/after", timeout=5)
        assert (response.status_code, response.text) == (200, "hello after from W")
        assert time.monotonic() - started < 5
        async with asyncio.timeout(WAIT):
            await worker.wait_for_stderr("undecodable")
        assert (await http.get("/hello/again")).status_code == 200
        lines = [line for line in worker.stderr_lines if "undecodable" in line]
        assert len(lines) == 1, worker.output()
        assert "WARNING" in lines[0] and "'asgi:http.request'" in lines[0]
        assert len(lines[0]) < 500
        assert worker.process.returncode is None
