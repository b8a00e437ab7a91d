"""RedisPubSubChannelLayer: the conformance suite on one real redis-server and on three shards
(minus the cases whose semantics differ on purpose for pub/sub, each with its reason), the same
suite again with every receiver already listening, and what only this layer promises:
reconnecting after a Redis restart, idle subscriptions that never time out, undecodable messages
dropped, fan-out across processes, broadcast of normal channels."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio

from tests.support.waiting import WAIT, until
from towpath.layers.base import (
    InvalidChannelLayerError,
    LayerConnectionError,
    Message,
    non_local_name,
)
from towpath.layers.redis.hosts import shard_for
from towpath.layers.redis.pubsub import RedisPubSubChannelLayer
from towpath.testing import ChannelLayerConformance
from towpath.testing.conformance import in_new_event_loop
from towpath.testing.services import RedisServer, RedisServerFactory

pytestmark = pytest.mark.redis


NOT_SUBSCRIBED = (
    "sends to a normal channel before anything receives on it; Redis Pub/Sub stores nothing, "
    "so a message nobody is subscribed to when it is published is gone (the 'listening' "
    "variant below runs this case with the receiver already subscribed)"
)
CAPACITY = (
    "Redis Pub/Sub has no capacity: PUBLISH cannot be refused, so send never raises "
    "ChannelFull and group_send never skips a full member"
)
GROUP_EXPIRY = (
    "memberships live in the process that added them and end with it (or group_discard/flush), "
    "so they are not expired: group_expiry is accepted and not applied"
)
FLUSH = (
    "flush unsubscribes everything, as channels_redis's pub/sub layer does, so the case's "
    "check (send, then receive) on a flushed channel meets a channel nobody is subscribed to"
)
CLOSE_POOLS = (
    "close_pools() ends this event loop's subscriptions, as close() does: what was delivered "
    "to them and not received yet is dropped, and Redis stored nothing to fetch again"
)
LOOPS = (
    "subscriptions belong to the event loop that made them; a message published while no "
    "loop is subscribed (between two loops, or to a loop that subscribed in another thread) "
    "is gone. test_pubsub_in_one_event_loop_after_another covers what holds"
)
CROSS_INSTANCE = (
    "the receiving instance is not subscribed when the other instance sends; pub/sub only "
    "reaches processes already subscribed"
)

#: Conformance cases that do not hold for pub/sub, with the reason (see docs/redis-pubsub.md).
PUBSUB_UNSUPPORTED = {
    "test_send_receive": NOT_SUBSCRIBED,
    "test_fifo_per_channel": NOT_SUBSCRIBED,
    "test_channels_are_independent": NOT_SUBSCRIBED,
    "test_send_many_delivers_all_and_reports_full": CAPACITY,
    "test_sender_and_receiver_share_nothing": NOT_SUBSCRIBED,
    "test_two_instances_share_channels": NOT_SUBSCRIBED,
    "test_capacity_raises_channel_full": CAPACITY,
    "test_capacity_frees_after_receive": NOT_SUBSCRIBED,
    "test_capacity_is_per_channel": CAPACITY,
    "test_group_send_skips_full_member": CAPACITY,
    "test_channel_capacity_by_glob": CAPACITY,
    "test_channel_capacity_by_regex": CAPACITY,
    "test_channel_capacity_first_match_wins": CAPACITY,
    "test_expired_message_is_not_delivered": NOT_SUBSCRIBED,
    "test_expired_messages_free_capacity": NOT_SUBSCRIBED,
    "test_group_membership_expires": GROUP_EXPIRY,
    "test_flush_drops_messages": FLUSH,
    "test_flush_drops_groups": FLUSH,
    "test_receive_many_names_the_channel": NOT_SUBSCRIBED,
    "test_receive_many_is_fair": NOT_SUBSCRIBED,
    "test_unserialisable_message_is_a_type_error": NOT_SUBSCRIBED,
    "test_every_value_type_round_trips": NOT_SUBSCRIBED,
    "test_encrypted_round_trip": NOT_SUBSCRIBED,
    "test_encryption_key_rotation": CROSS_INSTANCE,
    "test_group_send_over_capacity_is_skipped_and_logged": CAPACITY,
    "test_group_send_skips_only_the_member_at_capacity": CAPACITY,
    "test_group_send_waits_for_a_full_member": CAPACITY,
    "test_process_channel_capacity_counts_what_was_sent_before": CAPACITY,
    "test_close_pools_keeps_the_layer_usable": CLOSE_POOLS,
    "test_close_pools_keeps_process_channels": CLOSE_POOLS,
    "test_usable_from_one_event_loop_after_another": LOOPS,
    "test_process_channel_received_in_a_later_event_loop": LOOPS,
    "test_two_threads_with_loops_of_their_own": LOOPS,
}

#: With every receiver listening before anything is sent, only these remain.
LISTENING_UNSUPPORTED = {
    name: reason
    for name, reason in PUBSUB_UNSUPPORTED.items()
    if reason in (CAPACITY, GROUP_EXPIRY, CLOSE_POOLS, LOOPS)
}


class TestRedisPubSubConformance(ChannelLayerConformance):
    unsupported = PUBSUB_UNSUPPORTED
    timing_unit = 0.1  # expiry only applies locally, to the precision of the event loop

    @pytest.fixture(autouse=True)
    def _server(self, _skip_unsupported: None, redis_server: RedisServer) -> None:
        self.hosts = [redis_server.url]

    async def make_layer(self, **config: Any) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer(hosts=self.hosts, **config)


class TestShardedRedisPubSubConformance(ChannelLayerConformance):
    unsupported = PUBSUB_UNSUPPORTED
    timing_unit = 0.1

    @pytest.fixture(autouse=True)
    def _servers(self, _skip_unsupported: None, redis_server_factory: RedisServerFactory) -> None:
        self.hosts = [redis_server_factory().url for _ in range(3)]

    async def make_layer(self, **config: Any) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer(hosts=self.hosts, **config)


class _Listening(RedisPubSubChannelLayer):
    """Test double for a deployment whose receivers are already listening: before a send,
    every instance of the test subscribes to the channel (and the subscription is in effect)."""

    def __init__(self, peers: list[_Listening], **config: Any) -> None:
        super().__init__(**config)
        self._peers = peers
        peers.append(self)

    async def send(self, channel: str, message: Message) -> None:
        specific = isinstance(channel, str) and "!" in channel
        inbox = non_local_name(channel) if specific else ""
        listening = [p for p in self._peers if not specific or p.owns_inbox(inbox)]
        await asyncio.gather(*(peer.subscribe(channel) for peer in listening))
        await super().send(channel, message)

    async def close(self) -> None:
        if self in self._peers:
            self._peers.remove(self)
        await super().close()


class TestListeningRedisPubSubConformance(ChannelLayerConformance):
    """The suite again, with every channel subscribed by every instance before it is sent to:
    what pub/sub promises to a receiver that is listening (FIFO, fairness, expiry of what waits
    locally, flush, every value type, encryption and key rotation)."""

    unsupported = LISTENING_UNSUPPORTED
    timing_unit = 0.1

    @pytest.fixture(autouse=True)
    def _server(self, _skip_unsupported: None, redis_server: RedisServer) -> None:
        self.hosts = [redis_server.url]
        self.peers: list[_Listening] = []

    async def make_layer(self, **config: Any) -> RedisPubSubChannelLayer:
        return _Listening(self.peers, hosts=self.hosts, **config)


# -- helpers -----------------------------------------------------------------------------------


async def test_pubsub_in_one_event_loop_after_another(redis_server: RedisServer) -> None:
    """Sync code calling the layer through async_to_sync (a new event loop each call, closed
    afterwards), with close_pools() at the end of a call and without: every call subscribes
    afresh, and what it publishes once subscribed arrives."""
    layer = RedisPubSubChannelLayer(hosts=[redis_server.url])

    async def round_trip(n: int, close_pools: bool) -> list[Any]:
        channel = await layer.new_channel()
        await layer.group_add("loops", channel)
        await layer.send(channel, {"type": "own", "n": n})
        await layer.group_send("loops", {"type": "group", "n": n})
        got = [(await asyncio.wait_for(layer.receive(channel), WAIT))["n"] for _ in range(2)]
        if close_pools:
            await layer.close_pools()
        return got

    def sync_code() -> list[list[Any]]:
        return [in_new_event_loop(functools.partial(round_trip, n, n % 2 == 0)) for n in range(4)]

    try:
        assert await asyncio.to_thread(sync_code) == [[0, 0], [1, 1], [2, 2], [3, 3]]
        assert not [loop for loop in layer._states if loop.is_closed()]
    finally:
        await layer.close()


@contextlib.asynccontextmanager
async def layers(count: int, **config: Any) -> AsyncIterator[list[RedisPubSubChannelLayer]]:
    made = [RedisPubSubChannelLayer(**config) for _ in range(count)]
    try:
        yield made
    finally:
        for layer in made:
            await layer.close()


async def receive(layer: RedisPubSubChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def subscribers(url: str, key: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        counts = await client.pubsub_numsub(key)
    finally:
        await client.aclose()
    return int(counts[0][1])


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """``server`` frozen (SIGSTOP): its connections stay open and silent, like a hung host or a
    half-open TCP connection."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def nothing_more(layer: RedisPubSubChannelLayer, channel: str) -> bool:
    """True when the next message on ``channel`` is a marker sent now (nothing else waits)."""
    await layer.send(channel, {"type": "marker"})
    return (await receive(layer, channel)) == {"type": "marker"}


# -- faults --------------------------------------------------------------------------------------


async def test_messages_flow_again_after_a_redis_restart(redis_server: RedisServer) -> None:
    reconnected: list[str] = []

    async def on_reconnect() -> None:
        reconnected.append("reconnected")

    async with layers(1, hosts=[redis_server.url]) as (sender,):
        receiver = RedisPubSubChannelLayer(
            [redis_server.url], on_disconnect="redis.disconnect", on_reconnect=on_reconnect
        )
        try:
            channel = await receiver.new_channel()
            await receiver.group_add("room", channel)
            await sender.send(channel, {"type": "before"})
            assert (await receive(receiver, channel))["type"] == "before"

            redis_server.restart()

            # on_disconnect as a message type: channels_redis 3's form, delivered locally.
            assert await receive(receiver, channel) == {"type": "redis.disconnect"}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            sent = 0
            while True:  # publish until the re-subscribed receiver gets one
                with contextlib.suppress(LayerConnectionError):
                    await sender.send(channel, {"type": "after", "n": sent})
                sent += 1
                try:
                    message = await asyncio.wait_for(receiver.receive(channel), 0.05)
                    break
                except TimeoutError:
                    assert loop.time() < deadline, "no message got through after the restart"
            assert message["type"] == "after"
            # The group subscription is back as well.
            await sender.group_send("room", {"type": "group"})
            while message["type"] != "group":
                message = await receive(receiver, channel)
            await until(lambda: reconnected == ["reconnected"], "on_reconnect")
            assert receiver.reconnects == 1
        finally:
            await receiver.close()


async def test_idle_subscription_outlives_redis_py_default_socket_timeout(
    redis_server: RedisServer,
) -> None:
    # redis-py 8 gives connections socket_timeout=5 s; a subscription must block forever.
    async with layers(2, hosts=[redis_server.url]) as (receiver, sender):
        channel = await receiver.new_channel()
        await receiver.group_add("quiet", channel)
        await sender.send(channel, {"type": "warm-up"})
        assert (await receive(receiver, channel))["type"] == "warm-up"
        await asyncio.sleep(5.5)  # the point of the test: both connections idle > 5 s
        await sender.group_send("quiet", {"type": "awake"})
        assert (await asyncio.wait_for(receiver.receive(channel), 1))["type"] == "awake"
        assert receiver.reconnects == 0  # no silent reconnect papered over a timeout


async def test_unanswered_pings_make_a_stalled_subscription_reconnect(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A stopped server keeps the TCP connection open and silent, like a half-open connection.
    async with layers(2, hosts=[redis_server.url], ping_interval=0.05) as (receiver, sender):
        channel = await receiver.new_channel()
        with (
            caplog.at_level(logging.WARNING, logger="towpath.layers.redis.pubsub"),
            stopped(redis_server),
        ):
            await until(lambda: "does not answer" in caplog.text, "the PINGs to fail")
        await until(lambda: receiver.reconnects == 1, "the subscription to be restored")
        await sender.send(channel, {"type": "after-stall"})
        assert (await receive(receiver, channel))["type"] == "after-stall"


async def test_send_to_unreachable_redis_raises(redis_server: RedisServer) -> None:
    async with layers(1, hosts=[redis_server.url], retry_timeout=0.3) as (layer,):
        redis_server.kill()
        with pytest.raises(LayerConnectionError):
            await layer.send("anywhere", {"type": "x"})
        with pytest.raises(LayerConnectionError, match="subscribe"):
            await layer.new_channel()


async def test_send_after_a_restart_redials_instead_of_failing(redis_server: RedisServer) -> None:
    # The server closed the idle PUBLISH connection: nothing was written on it, so the next
    # send connects again rather than failing with "may or may not have been sent".
    async with layers(1, hosts=[redis_server.url]) as (layer,):
        await layer.send("anywhere", {"type": "connects"})
        redis_server.restart()
        await asyncio.sleep(0.1)  # the event loop sees the connection closed
        await layer.send("anywhere", {"type": "after-restart"})
        await layer.subscribe("here")
        await layer.send("here", {"type": "delivered"})
        assert (await receive(layer, "here"))["type"] == "delivered"


async def test_publish_without_a_reply_fails_after_command_timeout(
    redis_server: RedisServer,
) -> None:
    async with layers(1, hosts=[redis_server.url], command_timeout=0.2) as (layer,):
        await layer.send("anywhere", {"type": "connects"})
        with stopped(redis_server):
            started = asyncio.get_running_loop().time()
            with pytest.raises(LayerConnectionError, match="command_timeout=0.2"):
                await asyncio.wait_for(layer.send("anywhere", {"type": "hangs"}), WAIT)
            assert asyncio.get_running_loop().time() - started < 1.0
        await layer.subscribe("here")  # and the layer works again
        await layer.send("here", {"type": "back"})
        assert (await receive(layer, "here"))["type"] == "back"


async def test_close_fails_a_send_in_flight_with_layer_connection_error(
    redis_server: RedisServer,
) -> None:
    # The send was not cancelled, so it must not see a CancelledError: it learns that the
    # layer was closed under it.
    layer = RedisPubSubChannelLayer([redis_server.url])
    await layer.send("anywhere", {"type": "connects"})
    with stopped(redis_server):
        sending = asyncio.ensure_future(layer.send("anywhere", {"type": "in-flight"}))
        await asyncio.sleep(0.05)
        assert not sending.done()
        await layer.close()
        with pytest.raises(LayerConnectionError, match="closed"):
            await asyncio.wait_for(sending, WAIT)


@pytest.mark.parametrize("ticks", [0, 1, 2, 3])
async def test_close_just_after_a_send_starts_ends_it(
    redis_server: RedisServer, ticks: int
) -> None:
    # Whichever step the PUBLISH has reached (queued, written, awaiting its reply), closing the
    # layer ends the send: delivered, or LayerConnectionError; never a hang or CancelledError.
    layer = RedisPubSubChannelLayer([redis_server.url])
    await layer.send("anywhere", {"type": "connects"})
    sending = asyncio.ensure_future(layer.send("anywhere", {"type": "racing-close"}))
    for _ in range(ticks):
        await asyncio.sleep(0)
    await layer.close()
    with contextlib.suppress(LayerConnectionError):
        await asyncio.wait_for(sending, WAIT)


async def test_undecodable_message_is_dropped_and_the_next_delivered(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = [redis_server.url]
    async with (
        layers(1, hosts=url, symmetric_encryption_keys=["right"]) as (receiver,),
        layers(1, hosts=url, symmetric_encryption_keys=["wrong"]) as (stranger,),
        layers(1, hosts=url, symmetric_encryption_keys=["right"]) as (friend,),
    ):
        channel = await receiver.new_channel()
        with caplog.at_level(logging.WARNING, logger="towpath.layers.redis.pubsub"):
            await stranger.send(channel, {"type": "unreadable"})
            await friend.send(channel, {"type": "readable"})
            assert (await receive(receiver, channel))["type"] == "readable"
        assert receiver.undecodable == receiver.stats.undecodable == 1
        assert "Dropped 1 undecodable entry read from the Redis" in caplog.text
        await friend.send(channel, {"type": "still-reading"})
        assert (await receive(receiver, channel))["type"] == "still-reading"


# -- pub/sub semantics -------------------------------------------------------------------------


async def test_group_send_fans_out_to_members_in_every_process(redis_server: RedisServer) -> None:
    async with layers(3, hosts=[redis_server.url]) as (one, two, sender):
        members = [(layer, await layer.new_channel()) for layer in (one, one, two, two)]
        for layer, channel in members:
            await layer.group_add("room", channel)
        await sender.group_send("room", {"type": "hello"})
        for layer, channel in members:
            assert (await receive(layer, channel))["type"] == "hello"
        for layer, channel in members:
            assert await nothing_more(layer, channel)  # exactly once each
        assert sender.undelivered == 0
        await two.group_discard("room", members[2][1])
        await two.group_discard("room", members[3][1])
        assert await subscribers(redis_server.url, "asgi__group__room") == 1


async def test_normal_channel_is_broadcast_to_every_subscribed_process(
    redis_server: RedisServer,
) -> None:
    # Unlike the queue layer (one receiver gets each message), pub/sub gives every process
    # receiving on a normal channel its own copy.
    async with layers(3, hosts=[redis_server.url]) as (one, two, sender):
        await one.subscribe("jobs")
        await two.subscribe("jobs")
        await sender.send("jobs", {"type": "job", "n": 1})
        assert (await receive(one, "jobs"))["n"] == 1
        assert (await receive(two, "jobs"))["n"] == 1


async def test_message_nobody_subscribes_to_is_gone(redis_server: RedisServer) -> None:
    async with layers(1, hosts=[redis_server.url]) as (layer,):
        await layer.send("nobody", {"type": "lost"})
        assert layer.undelivered == 1
        await layer.subscribe("nobody")
        await layer.send("nobody", {"type": "kept"})
        assert (await receive(layer, "nobody"))["type"] == "kept"


async def test_prefix_separates_layers_on_one_server(redis_server: RedisServer) -> None:
    # Pub/Sub channels are server-wide (SELECT does not separate them): the prefix does.
    async with (
        layers(1, hosts=[redis_server.url], prefix="app1") as (app1,),
        layers(1, hosts=[redis_server.url], prefix="app2") as (app2,),
    ):
        await app1.subscribe("events")
        await app2.subscribe("events")
        await app1.send("events", {"type": "app1"})
        await app2.send("events", {"type": "app2"})
        assert (await receive(app1, "events"))["type"] == "app1"
        assert (await receive(app2, "events"))["type"] == "app2"


async def test_send_right_after_receive_starts_is_not_lost(redis_server: RedisServer) -> None:
    # The SUBSCRIBE and the PUBLISH travel on different connections; the layer writes its own
    # PUBLISH only once its pending SUBSCRIBE to that channel is confirmed.
    async with layers(1, hosts=[redis_server.url]) as (layer,):
        for n in range(20):
            waiting = asyncio.ensure_future(layer.receive(f"fresh-{n}"))
            await asyncio.sleep(0)
            await layer.send(f"fresh-{n}", {"type": "n", "n": n})
            assert (await asyncio.wait_for(waiting, WAIT))["n"] == n


async def test_send_in_the_tick_a_receive_starts_is_not_lost(redis_server: RedisServer) -> None:
    # The receive has not run yet when send is called: the PUBLISH is written after the tasks
    # already scheduled have run, and so after the receive's SUBSCRIBE is confirmed.
    async with layers(1, hosts=[redis_server.url]) as (layer,):
        for n in range(20):
            waiting = asyncio.ensure_future(layer.receive(f"same-tick-{n}"))
            await layer.send(f"same-tick-{n}", {"type": "n", "n": n})
            assert (await asyncio.wait_for(waiting, WAIT))["n"] == n
        assert layer.undelivered == 0


async def test_concurrent_sends_keep_their_order_per_channel(redis_server: RedisServer) -> None:
    async with layers(2, hosts=[redis_server.url]) as (receiver, sender):
        channels = [await receiver.new_channel() for _ in range(3)]
        messages = [(channel, {"type": "n", "n": n}) for n in range(50) for channel in channels]
        assert await sender.send_many(messages) == []
        for channel in channels:
            got = [(await receive(receiver, channel))["n"] for _ in range(50)]
            assert got == list(range(50))
        assert sender.undelivered == 0


async def test_abandoned_channel_is_unsubscribed_after_expiry(redis_server: RedisServer) -> None:
    async with layers(1, hosts=[redis_server.url], expiry=0.1) as (layer,):
        key = "asgi__channel__abandoned"
        waiting = asyncio.ensure_future(layer.receive("abandoned"))
        await until(lambda: subscribers(redis_server.url, key), "the receive to subscribe")
        waiting.cancel()  # the consumer went away
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert await subscribers(redis_server.url, key) == 1  # kept: cancelling loses nothing
        await asyncio.sleep(0.15)
        await layer.new_channel()  # any later activity sweeps
        await until(lambda: _not(subscribers(redis_server.url, key)), "the abandoned channel to go")
        # A new receive subscribes again.
        await layer.subscribe("abandoned")
        await layer.send("abandoned", {"type": "back"})
        assert (await receive(layer, "abandoned"))["type"] == "back"


async def _not(value: Any) -> bool:
    return not await value


async def test_flush_leaves_a_waiting_receive_working(redis_server: RedisServer) -> None:
    async with layers(1, hosts=[redis_server.url]) as (layer,):
        waiting = asyncio.ensure_future(layer.receive("waited-on"))
        await layer.subscribe("waited-on")
        await layer.flush()
        await until(
            lambda: subscribers(redis_server.url, "asgi__channel__waited-on"),
            "the waiting receive to subscribe again",
        )
        await layer.send("waited-on", {"type": "after-flush"})
        assert (await asyncio.wait_for(waiting, WAIT))["type"] == "after-flush"


async def test_subscriptions_live_on_their_shard(redis_server_factory: RedisServerFactory) -> None:
    servers = [redis_server_factory() for _ in range(3)]
    async with layers(1, hosts=[server.url for server in servers]) as (layer,):
        channels = [await layer.new_channel() for _ in range(24)]
        for n in range(6):
            await layer.group_add(f"g{n}", channels[n])
        keys = [f"asgi__channel__{c}" for c in channels] + [f"asgi__group__g{n}" for n in range(6)]
        found: dict[str, int] = {}
        for index, server in enumerate(servers):
            client = redis.asyncio.Redis.from_url(server.url)
            try:
                for name in await client.pubsub_channels():
                    found[name.decode()] = index
            finally:
                await client.aclose()
        assert found == {key: shard_for(key, 3) for key in keys}
        assert len(set(found.values())) == 3


async def test_through_sentinel(redis_server_factory: RedisServerFactory) -> None:
    master = redis_server_factory()
    sentinel = redis_server_factory.sentinel(master, "towpath-master")
    host = {"sentinels": [(sentinel.host, sentinel.port)], "master_name": "towpath-master"}
    async with layers(2, hosts=[host]) as (receiver, sender):
        channel = await receiver.new_channel()
        await receiver.group_add("watched", channel)
        await sender.send(channel, {"type": "direct"})
        await sender.group_send("watched", {"type": "group"})
        assert (await receive(receiver, channel))["type"] == "direct"
        assert (await receive(receiver, channel))["type"] == "group"


async def test_group_messages_interoperate_with_channels_redis(redis_server: RedisServer) -> None:
    theirs_module = pytest.importorskip("channels_redis.pubsub")
    theirs = theirs_module.RedisPubSubChannelLayer(hosts=[redis_server.url])
    async with layers(1, hosts=[redis_server.url]) as (ours,):
        try:
            mine = await ours.new_channel()
            await ours.group_add("shared", mine)
            their_channel = await theirs.new_channel()
            await theirs.group_add("shared", their_channel)
            await theirs.group_send("shared", {"type": "from.channels_redis", "body": b"\x00"})
            assert await receive(ours, mine) == {"type": "from.channels_redis", "body": b"\x00"}
            await ours.group_send("shared", {"type": "from.towpath"})
            got = [(await asyncio.wait_for(theirs.receive(their_channel), WAIT))["type"]]
            got.append((await asyncio.wait_for(theirs.receive(their_channel), WAIT))["type"])
            assert got == ["from.channels_redis", "from.towpath"]
        finally:
            await theirs.flush()


def test_async_to_sync_calls_leave_no_connection_open(redis_server: RedisServer) -> None:
    # Django code calls async_to_sync(layer.group_send) from sync views: each call runs in a new
    # event loop that is then closed; the layer's connections for it close with it.
    asgiref_sync = pytest.importorskip("asgiref.sync")
    layer = RedisPubSubChannelLayer([redis_server.url])
    for n in range(3):
        asgiref_sync.async_to_sync(layer.group_send)("from-sync", {"type": "n", "n": n})
    assert len(layer._states) == 0


# -- configuration -----------------------------------------------------------------------------


async def test_channels_redis_config_is_accepted(redis_server: RedisServer) -> None:
    # channels_redis's positional order (hosts, prefix, on_disconnect, on_reconnect), plus the
    # options of other layers, which load and do not apply in Redis.
    layer = RedisPubSubChannelLayer(
        [redis_server.url],
        "myapp",
        None,
        None,
        symmetric_encryption_keys=["k"],
        serializer_format="msgpack",
        expiry=30,
        group_expiry=600,
        capacity=5,
        channel_capacity={"http.*": 1},
    )
    try:
        assert layer.prefix == "myapp"
        assert "myapp" in repr(layer)
        await layer.subscribe("c")
        for n in range(10):  # more than capacity: nothing is ever full
            await layer.send("c", {"type": "n", "n": n})
        assert [(await receive(layer, "c"))["n"] for _ in range(10)] == list(range(10))
        assert await layer.send_many([("c", {"type": "x"})] * 3) == []
    finally:
        await layer.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("on_disconnect", 5),
        ("prefix", None),
        ("retry_timeout", 0),
        ("ping_interval", -1),
        ("serializer_format", "pickle"),
    ],
)
def test_bad_config_names_the_option(option: str, value: Any) -> None:
    with pytest.raises(InvalidChannelLayerError, match=option.split("_")[0]):
        RedisPubSubChannelLayer(**{option: value})
