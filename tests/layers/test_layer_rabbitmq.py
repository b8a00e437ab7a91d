"""RabbitMQChannelLayer: the conformance suite against a real RabbitMQ, plus what only this
layer promises: capacity through queue length limits and publisher confirms, capacity notices
of ``!`` channels between processes, memberships made by other processes, handing fetched
messages back, the whole stack (``towpath serve`` and two workers) on RabbitMQ, and surviving
a broker restart (on a private node this test starts and kills).

Every test uses its own ``prefix``, so tests never see each other's queues on the shared broker,
and flushes what it made."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from tests.support.commands import ENV, chat, runworker, stop, write_settings
from tests.support.waiting import WAIT, until
from towpath.config import LayerSettings, build_layer
from towpath.layers.base import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    LayerConnectionError,
)
from towpath.layers.rabbitmq import RabbitMQChannelLayer
from towpath.testing import ChannelLayerConformance
from towpath.testing.processes import towpath_serve
from towpath.testing.rabbitmq import RABBITMQ_SERVER_HINT, RabbitMQNode, find_rabbitmq_server
from towpath.testing.services import free_port, require_service

pytestmark = pytest.mark.rabbitmq


PROCESS_CHANNELS_END = (
    "a '!' channel's inbox queue lives while the event loop that made it consumes it "
    "(docs/rabbitmq.md): close()/close_pools() of that loop, or its end, deletes the queue, "
    "and what it held or buffered goes with it"
)


class TestRabbitMQConformance(ChannelLayerConformance):
    # no capacity at the sender: a full member's copy is dropped where it is read, at once
    # (docs/rabbitmq.md#capacity)
    group_send_waits = False
    unsupported = {
        "test_close_pools_keeps_process_channels": PROCESS_CHANNELS_END,
        "test_process_channel_received_in_a_later_event_loop": PROCESS_CHANNELS_END,
    }

    @pytest.fixture(autouse=True)
    def _broker(self, rabbitmq_url: str) -> None:
        self.url = rabbitmq_url
        self.prefix = f"towpath-test-{uuid.uuid4().hex[:10]}"

    async def make_layer(self, **config: Any) -> RabbitMQChannelLayer:
        return RabbitMQChannelLayer(url=self.url, prefix=self.prefix, **config)


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"towpath-test-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def layers(url: str, prefix: str, *configs: dict[str, Any]) -> AsyncIterator[Any]:
    """Layer instances on one broker and prefix (as separate processes would be); each is
    flushed and closed afterwards."""
    made = [RabbitMQChannelLayer(url=url, prefix=prefix, **config) for config in configs]
    try:
        yield made[0] if len(made) == 1 else made
    finally:
        for layer in made:
            with contextlib.suppress(Exception):
                await layer.flush()
            await layer.close()


async def receive(layer: RabbitMQChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def nothing_waiting(layer: RabbitMQChannelLayer, channel: str) -> bool:
    await layer.send(channel, {"type": "marker"})
    return await receive(layer, channel) == {"type": "marker"}


@contextlib.asynccontextmanager
async def raw_channel(url: str) -> AsyncIterator[Any]:
    """A plain aio-pika channel, to look at the broker behind the layer's back."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        yield await channel.get_underlay_channel()
    finally:
        await connection.close()


# -- capacity ------------------------------------------------------------------------------------


async def test_capacity_is_the_queue_length_limit(rabbitmq_url: str, prefix: str) -> None:
    async with layers(rabbitmq_url, prefix, {"capacity": 3}, {"capacity": 3}) as (one, two):
        for n in range(3):
            await one.send("limited", {"type": "n", "n": n})
        with pytest.raises(ChannelFull):
            await one.send("limited", {"type": "n", "n": 3})
        # The broker refused it (a nack of the confirm), so every process sees the limit.
        with pytest.raises(ChannelFull):
            await two.send("limited", {"type": "n", "n": 3})
        assert one.stats.full == 1 and two.stats.full == 1
        async with raw_channel(rabbitmq_url) as raw:
            declared = await raw.queue_declare(f"{prefix}:limited", passive=True)
            assert declared.message_count == 3
        assert [(await receive(two, "limited"))["n"] for _ in range(3)] == [0, 1, 2]
        await one.send("limited", {"type": "n", "n": 4})
        assert (await receive(two, "limited"))["n"] == 4


async def test_group_send_skips_a_full_normal_member_and_counts_it(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {"capacity": 1}, {"capacity": 1}) as (sender, reader):
        await sender.group_add("feeds", "feed-full")
        await sender.group_add("feeds", "feed-free")
        await sender.send("feed-full", {"type": "already-here"})
        await sender.group_send("feeds", {"type": "broadcast"})
        assert sender.stats.group_full == 1
        assert (await receive(reader, "feed-free"))["type"] == "broadcast"
        assert (await receive(reader, "feed-full"))["type"] == "already-here"
        assert await nothing_waiting(reader, "feed-full")


async def test_group_send_skips_a_full_member_in_another_process(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {"capacity": 1}, {"capacity": 1}) as (owner, sender):
        full, free = await owner.new_channel(), await owner.new_channel()
        await sender.group_add("room", full)
        await sender.group_add("room", free)
        await sender.send(full, {"type": "already-here"})
        await sender.group_send("room", {"type": "broadcast"})
        assert (await receive(owner, free))["type"] == "broadcast"
        # Skipped and counted where the member is read: only that process knows its backlog.
        assert owner.stats.group_full == 1
        assert (await receive(owner, full))["type"] == "already-here"
        assert await nothing_waiting(owner, full)


async def test_a_full_process_channel_refuses_senders_elsewhere(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {"capacity": 2}, {"capacity": 2}) as (owner, sender):
        channel = await owner.new_channel()
        await sender.new_channel()  # an inbox of its own, where the owner can say "full"
        accepted = 0
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            try:
                await sender.send(channel, {"type": "n", "n": accepted})
            except ChannelFull:
                break
            accepted += 1
            assert asyncio.get_running_loop().time() < deadline, "never refused"
        # At capacity, plus what was on its way before the notice arrived; nothing dropped.
        assert 2 <= accepted <= 10, accepted
        assert sender.stats.full == 1
        got = [(await receive(owner, channel))["n"] for _ in range(accepted)]
        assert got == list(range(accepted))

        async def accepted_again() -> bool:
            try:
                await sender.send(channel, {"type": "n", "n": -1})
            except ChannelFull:
                return False
            return True

        await until(accepted_again, "the owner to say the channel has room again")
        assert (await receive(owner, channel))["n"] == -1


async def test_process_inbox_limit_refuses_when_a_process_stops_reading(
    rabbitmq_url: str, prefix: str
) -> None:
    # inbox_capacity bounds what the broker keeps for a process that is not consuming (here:
    # an inbox declared for a channel name nobody reads any more).
    async with (
        layers(rabbitmq_url, prefix, {"inbox_capacity": 2}) as layer,
        raw_channel(rabbitmq_url) as raw,
    ):
        inbox = f"{prefix}@stopped"
        await raw.queue_declare(inbox, arguments=layer.broker.inbox_arguments())
        try:
            await layer.send("x.stopped!a", {"type": "1"})
            await layer.send("x.stopped!b", {"type": "2"})
            with pytest.raises(ChannelFull):
                await layer.send("x.stopped!c", {"type": "3"})
        finally:
            await raw.queue_delete(inbox)


# -- groups across processes ---------------------------------------------------------------------


async def test_group_add_by_another_process_of_a_channel_it_does_not_read(
    rabbitmq_url: str, prefix: str
) -> None:
    # A worker adds an interface server's reply channel to a group, then sends to the group at
    # once: the membership reaches the reader before any message routed through it.
    async with layers(rabbitmq_url, prefix, {}, {}, {}) as (server, worker, other):
        reply = await server.new_channel("interface")
        await worker.group_add("room", reply)
        await worker.group_send("room", {"type": "first"})
        assert (await receive(server, reply))["type"] == "first"
        await other.group_send("room", {"type": "second"})
        assert (await receive(server, reply))["type"] == "second"
        await worker.group_discard("room", reply)
        await worker.group_send("room", {"type": "after-discard"})
        assert await nothing_waiting(server, reply)


async def test_one_group_message_per_process_fans_out_locally(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {}, {}) as (server, worker):
        channels = [await server.new_channel() for _ in range(20)]
        for channel in channels[:10]:
            await server.group_add("many", channel)
        for channel in channels[10:]:
            await worker.group_add("many", channel)
        await worker.group_send("many", {"type": "all"})
        for channel in channels:
            assert (await receive(server, channel))["type"] == "all"
        async with raw_channel(rabbitmq_url) as raw:
            inbox = await raw.queue_declare(server.inbox_of(channels[0]), passive=True)
            assert inbox.message_count == 0  # one delivery, already fanned out here


async def test_group_expiry_of_a_membership_made_elsewhere(rabbitmq_url: str, prefix: str) -> None:
    async with layers(rabbitmq_url, prefix, {}, {"group_expiry": 0.3}) as (owner, worker):
        stale, fresh = await owner.new_channel(), await owner.new_channel()
        await worker.group_add("brief", stale)
        await asyncio.sleep(0.6)  # let the membership outlive group_expiry
        await worker.group_add("brief", fresh)
        await worker.group_send("brief", {"type": "late"})
        assert (await receive(owner, fresh))["type"] == "late"
        assert await nothing_waiting(owner, stale)


async def test_receiving_on_a_channel_another_process_reads_is_refused(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {}, {}) as (owner, other):
        channel = await owner.new_channel()
        with pytest.raises(ChannelLayerError, match="not made by this layer instance"):
            await other.receive(channel)
        await other.send(channel, {"type": "still-works"})
        assert (await receive(owner, channel))["type"] == "still-works"

        async def elsewhere() -> None:  # the same instance, in an event loop of another thread
            await owner.receive(channel)

        with pytest.raises(ChannelLayerError, match="read by another process"):
            await asyncio.to_thread(asyncio.run, elsewhere())
        await other.send(channel, {"type": "still-works"})
        assert (await receive(owner, channel))["type"] == "still-works"


def test_sync_callers_get_a_connection_per_event_loop(rabbitmq_url: str, prefix: str) -> None:
    # async_to_sync runs each call in a new event loop and closes it: the layer's state for
    # that loop (its connection) is closed with it, and the next call opens another.
    layer = RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix)
    asyncio.run(layer.send("from-sync", {"type": "n", "n": 1}))
    asyncio.run(layer.send("from-sync", {"type": "n", "n": 2}))
    assert not layer._states

    async def drain() -> list[int]:
        try:
            return [(await receive(layer, "from-sync"))["n"] for _ in range(2)]
        finally:
            await layer.flush()
            await layer.close()

    assert asyncio.run(drain()) == [1, 2]


# -- expiry --------------------------------------------------------------------------------------


async def test_expired_messages_are_dropped_by_the_broker(rabbitmq_url: str, prefix: str) -> None:
    async with (
        layers(rabbitmq_url, prefix, {"expiry": 0.2}) as layer,
        raw_channel(rabbitmq_url) as raw,
    ):
        for n in range(3):
            await layer.send("ttl", {"type": "n", "n": n})
        assert (await raw.queue_declare(f"{prefix}:ttl", passive=True)).message_count == 3

        async def emptied() -> bool:
            declared = await raw.queue_declare(f"{prefix}:ttl", passive=True)
            return declared.message_count == 0

        await until(emptied, "RabbitMQ to drop the expired messages (message TTL)")


async def test_expired_process_messages_are_counted_by_their_reader(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {}, {"expiry": 0.2}) as (owner, sender):
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "old"})
        await sender.send(channel, {"type": "old"})
        await asyncio.sleep(0.4)  # let them outlive expiry in the owner's buffer
        await sender.send(channel, {"type": "new"})
        assert (await receive(owner, channel))["type"] == "new"
        assert owner.stats.expired == 2


# -- encryption ----------------------------------------------------------------------------------


async def test_messages_are_encrypted_on_the_broker(
    rabbitmq_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {"symmetric_encryption_keys": ["the-key"]}
    other = {"symmetric_encryption_keys": ["another-key"]}
    async with layers(rabbitmq_url, prefix, keys, other) as (layer, stranger):
        await layer.send("vault", {"type": "secret", "text": "plaintext-marker"})
        async with raw_channel(rabbitmq_url) as raw:
            got = await raw.basic_get(f"{prefix}:vault", no_ack=True)
            assert got.body and b"plaintext-marker" not in got.body
        await layer.send("vault", {"type": "secret", "text": "not-for-the-stranger"})
        await stranger.send("vault", {"type": "marker"})
        with caplog.at_level(logging.WARNING, logger="towpath.layers"):
            # Undecodable with its keys: logged and dropped, and the reader goes on.
            assert (await receive(stranger, "vault"))["type"] == "marker"
        assert "symmetric_encryption_keys" in caplog.text
        assert stranger.stats.undecodable == 1


# -- fetching and handing back -------------------------------------------------------------------


async def test_stop_receiving_hands_fetched_messages_back(rabbitmq_url: str, prefix: str) -> None:
    async with layers(rabbitmq_url, prefix, {}, {}, {}) as (sender, stopping, other):
        for n in range(10):
            await sender.send("work", {"type": "n", "n": n})
        assert (await receive(stopping, "work"))["n"] == 0
        await until(lambda: stopping._state().mailbox.length("work") == 9, "the prefetch")
        await stopping.stop_receiving(["work"])
        assert stopping.stats.given_back == 9
        assert [(await receive(other, "work"))["n"] for _ in range(9)] == list(range(1, 10))


async def test_an_idle_receiver_hands_fetched_messages_back(rabbitmq_url: str, prefix: str) -> None:
    config = {"fetch_idle": 0.2}
    async with layers(rabbitmq_url, prefix, config, config, config) as (sender, idle, busy):
        for n in range(5):
            await sender.send("jobs", {"type": "n", "n": n})
        assert (await receive(idle, "jobs"))["n"] == 0
        # `idle` prefetched the rest; with no receiver of its own waiting, it gives them back.
        assert [(await receive(busy, "jobs"))["n"] for _ in range(4)] == [1, 2, 3, 4]
        assert idle.stats.given_back == 4


async def test_close_hands_fetched_messages_back(rabbitmq_url: str, prefix: str) -> None:
    async with layers(rabbitmq_url, prefix, {}, {}) as (sender, other):
        first = RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix)
        for n in range(5):
            await sender.send("tasks", {"type": "n", "n": n})
        assert (await receive(first, "tasks"))["n"] == 0
        await first.close()
        assert [(await receive(other, "tasks"))["n"] for _ in range(4)] == [1, 2, 3, 4]


async def test_send_to_a_process_that_is_gone_is_dropped_and_counted(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {}) as sender:
        owner = RabbitMQChannelLayer(url=rabbitmq_url, prefix=prefix)
        channel = await owner.new_channel()
        await owner.close()  # its inbox goes with its connection

        async def dropped() -> bool:
            await sender.send(channel, {"type": "nobody-reads-this"})
            return sender.stats.unroutable > 0

        await until(dropped, "the gone process's inbox to be deleted")


async def test_flush_deletes_its_queues_and_the_groups_exchange(
    rabbitmq_url: str, prefix: str
) -> None:
    async with layers(rabbitmq_url, prefix, {}) as layer, raw_channel(rabbitmq_url) as raw:
        neighbour = f"{prefix}-not-mine.kept"
        await raw.queue_declare(neighbour)
        try:
            await layer.send("flushed", {"type": "x"})
            await layer.group_add("g", "flushed")
            await layer.flush()
            with pytest.raises(ChannelNotFoundEntity):
                await raw.queue_declare(f"{prefix}:flushed", passive=True)
        finally:
            async with raw_channel(rabbitmq_url) as again:
                await again.queue_delete(neighbour)
    async with raw_channel(rabbitmq_url) as raw:
        with pytest.raises(ChannelNotFoundEntity):
            await raw.exchange_declare(f"{prefix}:groups", passive=True)


# -- configuration -------------------------------------------------------------------------------


def test_a_url_that_is_not_amqp_names_the_setting() -> None:
    with pytest.raises(InvalidChannelLayerError, match="url must be an AMQP URL"):
        RabbitMQChannelLayer(url="redis://localhost:6379")
    with pytest.raises(InvalidChannelLayerError, match="url or host"):
        RabbitMQChannelLayer(url="amqp://localhost/", host="amqp://localhost/")
    with pytest.raises(InvalidChannelLayerError, match="prefetch"):
        RabbitMQChannelLayer(prefetch=0)


async def test_an_unreachable_broker_names_the_url(prefix: str) -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/%2F"
    layer = RabbitMQChannelLayer(url=url, prefix=prefix, retry_timeout=0.5)
    try:
        with pytest.raises(LayerConnectionError, match="check the url setting") as raised:
            await layer.send("nowhere", {"type": "x"})
        assert "secret" not in str(raised.value) and "127.0.0.1" in str(raised.value)
        with pytest.raises(LayerConnectionError):
            await layer.group_send("nobody", {"type": "x"})
        assert layer.stats.publish_failed == 2
    finally:
        await layer.close()


async def test_failed_dials_leave_no_connection_for_the_garbage_collector(prefix: str) -> None:
    """aio-pika closes a connection it could not open from ``__del__``; collected in another
    thread (here: the collector run from a worker thread) that is a ``close()`` coroutine never
    awaited, which pytest reports. The layer closes what failed itself."""
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    layer = RabbitMQChannelLayer(url=url, prefix=prefix, retry_timeout=0.3)
    try:
        with pytest.raises(LayerConnectionError):
            await layer.send("nowhere", {"type": "x"})
    finally:
        await layer.close()
    await asyncio.to_thread(gc.collect)


class CuttableProxy:
    """A TCP proxy in front of the broker that can hold the broker's replies and then cut
    every connection through it (and refuse new ones): a connection that breaks at a known
    point, for real, without touching the shared broker."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.holding = False
        #: set when the client wrote something while the replies were held
        self.sent_while_held = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, upstream=True),
            self._pipe(up_reader, writer, upstream=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while data := await reader.read(65536):
            if upstream and self.holding:
                self.sent_while_held.set()
            if not upstream and self.holding:
                continue  # the broker's replies (the confirm) never reach the client
            writer.write(data)
            await writer.drain()

    async def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def test_a_broken_connection_reaches_the_caller_as_towpath_exceptions(
    rabbitmq_url: str, prefix: str
) -> None:
    """The connection breaks while a send waits for the broker's confirm; that send and every
    call after it raise towpath's exceptions, never aiormq's or aio-pika's (a receive of a
    normal channel waits through an outage instead: its fetcher retries)."""
    target = aio_pika.connection.make_url(rabbitmq_url)
    proxy = CuttableProxy(target.host or "127.0.0.1", target.port or 5672)
    port = await proxy.start()
    url = str(target.with_host("127.0.0.1").with_port(port))
    layer = RabbitMQChannelLayer(url=url, prefix=prefix, retry_timeout=0.5, connect_timeout=0.5)
    try:
        await layer.send("work", {"type": "warm"})  # declared, connected
        await layer.group_add("room", "work")
        proxy.holding = True
        sending = asyncio.create_task(layer.send("work", {"type": "lost"}))
        await asyncio.wait_for(proxy.sent_while_held.wait(), WAIT)
        await proxy.cut()
        with pytest.raises(LayerConnectionError, match="may or may not have been delivered"):
            await asyncio.wait_for(sending, WAIT)
        calls = {
            "send": layer.send("work", {"type": "x"}),
            "group_send": layer.group_send("room", {"type": "x"}),
            "group_add": layer.group_add("room", "other"),
            "group_discard": layer.group_discard("room", "work"),
            "new_channel": layer.new_channel(),  # its inbox cannot be declared
            "flush": layer.flush(),
        }
        for name, call in calls.items():
            with pytest.raises(LayerConnectionError) as raised:
                await asyncio.wait_for(call, WAIT)
            assert type(raised.value).__module__.startswith("towpath."), name
        assert layer.stats.publish_failed == 3
    finally:
        await layer.close()


async def test_a_refused_declaration_reaches_the_caller_as_a_channel_layer_error(
    rabbitmq_url: str,
) -> None:
    """The broker refuses names that start with ``amq.`` (ACCESS_REFUSED, an AMQP channel
    error): the caller sees ``ChannelLayerError``, with aiormq's exception as its cause."""
    layer = RabbitMQChannelLayer(url=rabbitmq_url, prefix=f"amq.towpath-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(ChannelLayerError, match="ACCESS_REFUSED") as raised:
            await layer.send("work", {"type": "x"})
        assert type(raised.value) is ChannelLayerError
        assert type(raised.value.__cause__).__module__.startswith("aiormq")
    finally:
        await layer.close()


async def test_refused_credentials_name_the_url(rabbitmq_url: str, prefix: str) -> None:
    url = rabbitmq_url.replace("guest:guest@", "guest:wrong-password@")
    layer = RabbitMQChannelLayer(url=url, prefix=prefix, retry_timeout=5)
    try:
        with pytest.raises(InvalidChannelLayerError, match="user, password and virtual host"):
            await layer.send("nowhere", {"type": "x"})
    finally:
        await layer.close()


def test_settings_entry_builds_the_layer(rabbitmq_url: str) -> None:
    backend = "towpath.layers.rabbitmq.RabbitMQChannelLayer"
    layer = build_layer(LayerSettings("default", backend, {"url": rabbitmq_url, "capacity": 7}))
    assert isinstance(layer, RabbitMQChannelLayer) and layer.capacity == 7
    with pytest.raises(InvalidChannelLayerError, match="prefetch"):
        build_layer(LayerSettings("default", backend, {"prefetsh": 3}))


# -- the whole stack -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_serve_and_workers_on_rabbitmq(
    rabbitmq_url: str, prefix: str, tmp_path: Path
) -> None:
    """``towpath serve`` in front, two ``towpath runworker`` split by channel filters, real
    clients: HTTP, a job on a normal channel, a WebSocket chat group, graceful stops."""
    backend = "towpath.layers.rabbitmq.RabbitMQChannelLayer"
    settings = write_settings(tmp_path, backend, {"url": rabbitmq_url, "prefix": prefix})
    args = ("--settings", str(settings))
    listening: list[str] = []
    try:
        async with (
            towpath_serve(*args, "--port", "0", cwd=tmp_path, env=ENV) as served,
            runworker(*args, "--only-channels", "http.*", tag="A", cwd=tmp_path) as a,
            runworker(*args, "--exclude-channels", "http.*", tag="B", cwd=tmp_path) as b,
            httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
        ):
            listening = [line for w in (a, b) for line in w.stderr_lines if "listening" in line]
            response = await http.get("/hello/there")
            assert (response.status_code, response.text) == (200, "hello there from A")
            # A queues the job on a normal channel; only B reads it, and answers the client.
            response = await http.get("/thumb?id=42")
            assert (response.status_code, response.text) == (200, "thumbnail 42 by B")
            await chat(served.ws_url + "/chat/", "B")
            assert await stop(a) == 0
            assert await stop(b) == 0
    finally:
        names = {n.strip(", \n") for line in listening for n in line.split(" on ", 1)[1].split()}
        async with raw_channel(rabbitmq_url) as raw:
            for name in names:
                await raw.queue_delete(f"{prefix}:{name}")
            await raw.exchange_delete(f"{prefix}:groups")


# -- a broker restart ----------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node this test may kill and restart (not the shared broker)."""
    binary = find_rabbitmq_server()
    require_service("rabbitmq-server (a private node)", binary is not None, RABBITMQ_SERVER_HINT)
    with RabbitMQNode(binary) as node:
        yield node


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_broker_restart_is_survived(
    rabbitmq_node: RabbitMQNode, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="towpath.layers.rabbitmq")
    config: dict[str, Any] = {"retry_timeout": 1.0}
    url = rabbitmq_node.url
    async with layers(url, prefix, config, config) as (owner, sender):
        reply = await owner.new_channel()
        await owner.group_add("room", reply)
        await sender.group_add("room", await sender.new_channel())
        for n in range(10):
            await sender.send("work", {"type": "n", "n": n})
            await sender.send(reply, {"type": "n", "n": n})
        for n in range(10):
            assert (await receive(owner, "work"))["n"] == n
            assert (await receive(owner, reply))["n"] == n
        # Receivers wait through the outage: their consumers must come back by themselves.
        waiting_work = asyncio.ensure_future(owner.receive("work"))
        waiting_reply = asyncio.ensure_future(owner.receive(reply))
        mailbox = owner._state().mailbox
        await until(lambda: mailbox.waiting("work") and mailbox.waiting(reply), "receivers to wait")
        await asyncio.to_thread(rabbitmq_node.kill)
        with pytest.raises(LayerConnectionError):
            await sender.send("work", {"type": "lost"})
        assert sender.stats.publish_failed >= 1
        await asyncio.to_thread(rabbitmq_node.start)

        async def sent() -> bool:
            try:
                await sender.send("work", {"type": "n", "n": 100})
            except LayerConnectionError:
                return False
            return True

        await until(sent, "sends to succeed after the restart")
        assert (await asyncio.wait_for(waiting_work, WAIT))["n"] == 100

        # The reply channel keeps its name: the owner declares its inbox again. What was sent
        # before it did is dropped as unroutable, and counted.
        async def replied() -> bool:
            await sender.send(reply, {"type": "n", "n": 101})
            return waiting_reply.done()

        await until(replied, "the owner's inbox to be restored")
        assert (await waiting_reply)["n"] == 101
        # Memberships of its channels are bound again, and group sends reach them.
        await sender.group_send("room", {"type": "after-restart"})

        async def group_message() -> bool:
            message = await receive(owner, reply)
            return message["type"] == "after-restart"

        await until(group_message, "the group message after the restart")
        assert owner.stats.reconnects == 1 and sender.stats.reconnects == 1
        assert sender.stats.unroutable >= 1 or owner._state().inboxes
    # The outage is two lines per connection (lost, back), however many redials it took.
    lines = [r.getMessage() for r in caplog.records if r.name == "towpath.layers.rabbitmq"]
    assert sum("unreachable" in line for line in lines) == 2, lines
    assert sum("reachable again" in line for line in lines) == 2, lines
    assert not [r for r in caplog.records if "error when creating transport" in r.getMessage()]
