"""The channel layer conformance suite: one set of tests every layer must pass.

Run it against any layer, towpath's or your own, by subclassing in a test module::

    from towpath.testing import ChannelLayerConformance

    class TestMyLayer(ChannelLayerConformance):
        async def make_layer(self, **config):
            return MyLayer(hosts=[...], **config)

``make_layer`` receives the options a case needs (``capacity``, ``expiry``, ``group_expiry``,
``channel_capacity``, ``symmetric_encryption_keys``, ``group_send_timeout``); the suite flushes
and closes every layer it makes. Class attributes describe what a layer can promise:
``shared_between_instances`` (two instances see the same channels, as with a server),
``timing_unit`` (the shortest expiry the layer honours, in seconds), ``group_send_waits`` (its
``group_send`` waits for a full member, up to a ``group_send_timeout`` option; the cases of
channels_redis's skip-at-once pass ``group_send_timeout=0``; False for a layer that skips a full
member at once and takes no such option), ``injectable_clock`` (the layer takes a ``clock``
option, a callable returning seconds, and computes expiry with it in this process: the expiry
cases then move a :class:`ManualClock` instead of sleeping; False for a layer whose expiry a
server computes) and ``unsupported`` ({test name: documented reason}) for a layer whose
semantics differ on purpose (a pub/sub layer has no capacity, say).

Needs pytest and pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pytest

from towpath.layers.base import BaseChannelLayer, ChannelFull, ChannelLayerError

__all__ = ["ChannelLayerConformance", "ManualClock", "in_new_event_loop"]

BAD_CHANNEL_NAMES = ["", "has space", "émoji", "a" * 100, "two!bangs!here", "slash/es", "q?"]
BAD_GROUP_NAMES = ["", "has space", "bang!", "a" * 100, "semi;colon"]
WAIT = 10.0  # an upper bound for anything that must happen, never a synchronisation sleep
#: how long a receive that must find nothing is given (what channels_redis's tests allow)
QUIET = 1.0

T = TypeVar("T")


def in_new_event_loop(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call()`` in a new event loop, closed afterwards: what ``async_to_sync`` does for
    sync code (a Django view) and what a thread with a loop of its own does."""

    async def main() -> T:
        return await call()

    return asyncio.run(main())


class ManualClock:
    """A clock that moves only when told: call it for the time (epoch seconds, starting at
    the real time), :meth:`advance` to move it."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.asyncio
class ChannelLayerConformance:
    """Mix-in of test cases; subclasses implement ``make_layer``."""

    shared_between_instances: ClassVar[bool] = True
    timing_unit: ClassVar[float] = 0.2
    group_send_waits: ClassVar[bool] = True
    injectable_clock: ClassVar[bool] = False
    unsupported: ClassVar[dict[str, str]] = {}
    #: the clock given to every layer the suite makes (``injectable_clock``), new per case
    clock: ManualClock

    async def make_layer(self, **config: Any) -> BaseChannelLayer:
        raise NotImplementedError("subclasses return a new layer built with **config")

    @pytest.fixture(autouse=True)
    def _skip_unsupported(self, request: pytest.FixtureRequest) -> None:
        reason = self.unsupported.get(request.function.__name__)
        if reason:
            pytest.skip(f"{type(self).__name__} does not promise this: {reason}")

    @pytest.fixture(autouse=True)
    def _manual_clock(self) -> None:
        self.clock = ManualClock()

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for the layer: the manual clock moves at once with an
        ``injectable_clock``; otherwise, a real wait (the expiry is the server's)."""
        if self.injectable_clock:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def layer(self, **config: Any) -> AsyncIterator[BaseChannelLayer]:
        if self.injectable_clock:
            config.setdefault("clock", self.clock)
        layer = await self.make_layer(**config)
        try:
            yield layer
        finally:
            await layer.flush()
            await layer.close()

    def require_shared(self) -> None:
        if not self.shared_between_instances:
            pytest.skip("layer instances do not share channels (single-process layer)")

    @property
    def skip_at_once(self) -> dict[str, Any]:
        """The option that makes ``group_send`` skip a full member at once, as channels_redis
        does (none for a layer that always does)."""
        return {"group_send_timeout": 0} if self.group_send_waits else {}

    @staticmethod
    async def receive(layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), WAIT)

    @staticmethod
    async def nothing_within(layer: BaseChannelLayer, channel: str) -> bool:
        """True when no message arrives on ``channel`` within ``QUIET`` seconds (for a message
        that must never come, where a marker cannot be sent: the channel is full)."""
        try:
            await asyncio.wait_for(layer.receive(channel), QUIET)
        except TimeoutError:
            return True
        return False

    @staticmethod
    async def nothing_waiting(layer: BaseChannelLayer, channel: str) -> bool:
        """True when ``channel`` holds no message: a marker sent now is the next one out."""
        await layer.send(channel, {"type": "marker"})
        message = await asyncio.wait_for(layer.receive(channel), WAIT)
        return message == {"type": "marker"}

    # -- sending and receiving -----------------------------------------------------------------

    async def test_send_receive(self) -> None:
        async with self.layer() as layer:
            await layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
            message = await self.receive(layer, "test-channel-1")
            assert message == {"type": "test.message", "text": "Ahoy-hoy!"}

    async def test_fifo_per_channel(self) -> None:
        async with self.layer(capacity=200) as layer:
            for n in range(100):
                await layer.send("fifo", {"type": "n", "n": n})
            received = [(await self.receive(layer, "fifo"))["n"] for _ in range(100)]
            assert received == list(range(100))

    async def test_channels_are_independent(self) -> None:
        async with self.layer() as layer:
            await layer.send("left", {"type": "left"})
            await layer.send("right", {"type": "right"})
            assert (await self.receive(layer, "right"))["type"] == "right"
            assert (await self.receive(layer, "left"))["type"] == "left"

    async def test_receive_waits_for_a_later_send(self) -> None:
        async with self.layer() as layer:
            waiting = asyncio.ensure_future(self.receive(layer, "later"))
            await asyncio.sleep(0)
            assert not waiting.done()
            await layer.send("later", {"type": "late"})
            assert (await waiting)["type"] == "late"

    async def test_send_many_delivers_all_and_reports_full(self) -> None:
        async with self.layer(capacity=2) as layer:
            full = await layer.send_many(
                [("bulk-a", {"type": "a", "n": n}) for n in range(3)] + [("bulk-b", {"type": "b"})]
            )
            assert full == ["bulk-a"]
            assert [(await self.receive(layer, "bulk-a"))["n"] for _ in range(2)] == [0, 1]
            assert (await self.receive(layer, "bulk-b"))["type"] == "b"

    async def test_sender_and_receiver_share_nothing(self) -> None:
        async with self.layer() as layer:
            message: dict[str, Any] = {"type": "shared", "items": [1, 2]}
            await layer.send("copy", message)
            message["items"].append(3)
            assert (await self.receive(layer, "copy"))["items"] == [1, 2]

    async def test_two_instances_share_channels(self) -> None:
        self.require_shared()
        async with self.layer() as sender, self.layer() as receiver:
            await sender.send("between", {"type": "hello"})
            assert (await self.receive(receiver, "between"))["type"] == "hello"

    # -- process-specific channels -------------------------------------------------------------

    async def test_new_channel_name_shape(self) -> None:
        async with self.layer() as layer:
            default = await layer.new_channel()
            assert re.fullmatch(r"specific\.[\w\-.]+![\w\-.]+", default), default
            custom = await layer.new_channel("interface")
            assert custom.startswith("interface.") and "!" in custom
            assert len(custom) < 100

    async def test_new_channel_names_are_unique(self) -> None:
        async with self.layer() as layer:
            names = {await layer.new_channel() for _ in range(1000)}
            assert len(names) == 1000

    async def test_new_channel_unique_after_random_seed(self) -> None:
        async with self.layer() as layer:
            random.seed(42)
            first = await layer.new_channel()
            random.seed(42)
            second = await layer.new_channel()
            assert first != second

    async def test_new_channel_unique_across_instances(self) -> None:
        async with self.layer() as one, self.layer() as two:
            random.seed(7)
            first = await one.new_channel()
            random.seed(7)
            second = await two.new_channel()
            assert first != second

    async def test_process_specific_send_receive(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "direct", "body": b"\x00\xff"})
            assert await self.receive(layer, channel) == {"type": "direct", "body": b"\x00\xff"}

    async def test_process_specific_channels_are_independent(self) -> None:
        async with self.layer() as layer:
            one, two = await layer.new_channel(), await layer.new_channel("other")
            await layer.send(one, {"type": "one"})
            await layer.send(two, {"type": "two"})
            assert (await self.receive(layer, two))["type"] == "two"
            assert (await self.receive(layer, one))["type"] == "one"

    async def test_process_specific_from_another_instance(self) -> None:
        self.require_shared()
        async with self.layer() as owner, self.layer() as other:
            channel = await owner.new_channel()
            for n in range(5):
                await other.send(channel, {"type": "n", "n": n})
            assert [(await self.receive(owner, channel))["n"] for _ in range(5)] == list(range(5))

    async def test_receive_on_a_process_channel_made_elsewhere_is_refused(self) -> None:
        # channels_redis and fast-channels refuse at once (with an assert); a receive that
        # waited instead would wait forever: only the maker's instance is sent its messages.
        async with self.layer() as layer:
            foreign = "not-client-prefix!local_part"
            with pytest.raises(ChannelLayerError, match=re.escape(repr(foreign))):
                await asyncio.wait_for(layer.receive(foreign), WAIT)
            with pytest.raises(ChannelLayerError, match="not made by this layer instance"):
                await asyncio.wait_for(layer.receive_many(["fine-normal", foreign]), WAIT)
            with pytest.raises(ChannelLayerError):
                await asyncio.wait_for(layer.receive("not-client-prefix!"), WAIT)
            own = await layer.new_channel()
            await layer.send(own, {"type": "still-fine"})
            assert (await self.receive(layer, own))["type"] == "still-fine"

    async def test_receive_on_another_instances_process_channel_is_refused(self) -> None:
        async with self.layer() as owner, self.layer() as other:
            channel = await owner.new_channel()
            with pytest.raises(ChannelLayerError, match=re.escape(repr(channel))):
                await asyncio.wait_for(other.receive(channel), WAIT)

    # -- groups --------------------------------------------------------------------------------

    async def test_group_send_reaches_every_member(self) -> None:
        async with self.layer() as layer:
            members = [await layer.new_channel() for _ in range(3)]
            for channel in members:
                await layer.group_add("test-group", channel)
            await layer.group_send("test-group", {"type": "message.1"})
            for channel in members:
                assert (await self.receive(layer, channel))["type"] == "message.1"

    async def test_group_discard_stops_delivery(self) -> None:
        async with self.layer() as layer:
            stay, leave = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("g", stay)
            await layer.group_add("g", leave)
            await layer.group_discard("g", leave)
            await layer.group_send("g", {"type": "after"})
            assert (await self.receive(layer, stay))["type"] == "after"
            assert await self.nothing_waiting(layer, leave)

    async def test_group_discard_before_add_is_harmless(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.group_discard("never-joined", channel)
            await layer.group_add("never-joined", channel)
            await layer.group_send("never-joined", {"type": "ok"})
            assert (await self.receive(layer, channel))["type"] == "ok"

    async def test_group_add_twice_delivers_once(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.group_add("twice", channel)
            await layer.group_add("twice", channel)
            await layer.group_send("twice", {"type": "once"})
            assert (await self.receive(layer, channel))["type"] == "once"
            assert await self.nothing_waiting(layer, channel)

    async def test_channel_in_many_groups(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            for group in ("g1", "g2", "g3"):
                await layer.group_add(group, channel)
            for group in ("g1", "g2", "g3"):
                await layer.group_send(group, {"type": "from", "group": group})
            got = {(await self.receive(layer, channel))["group"] for _ in range(3)}
            assert got == {"g1", "g2", "g3"}

    async def test_group_send_to_empty_group(self) -> None:
        async with self.layer() as layer:
            await layer.group_send("nobody-here", {"type": "void"})

    async def test_groups_are_independent(self) -> None:
        async with self.layer() as layer:
            red, blue = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("red", red)
            await layer.group_add("blue", blue)
            await layer.group_send("red", {"type": "red"})
            assert (await self.receive(layer, red))["type"] == "red"
            assert await self.nothing_waiting(layer, blue)

    async def test_group_with_normal_channel_member(self) -> None:
        async with self.layer() as layer:
            await layer.group_add("mixed", "plain-member")
            await layer.group_send("mixed", {"type": "plain"})
            assert (await self.receive(layer, "plain-member"))["type"] == "plain"

    async def test_group_send_from_another_instance(self) -> None:
        self.require_shared()
        async with self.layer() as owner, self.layer() as other:
            channel = await owner.new_channel()
            await owner.group_add("across", channel)
            await other.group_send("across", {"type": "across"})
            assert (await self.receive(owner, channel))["type"] == "across"

    # -- capacity ------------------------------------------------------------------------------

    async def test_capacity_raises_channel_full(self) -> None:
        async with self.layer(capacity=3) as layer:
            for n in range(3):
                await layer.send("cap", {"type": "n", "n": n})
            with pytest.raises(ChannelFull):
                await layer.send("cap", {"type": "n", "n": 3})
            assert [(await self.receive(layer, "cap"))["n"] for _ in range(3)] == [0, 1, 2]

    async def test_capacity_frees_after_receive(self) -> None:
        async with self.layer(capacity=1) as layer:
            await layer.send("cap1", {"type": "first"})
            assert (await self.receive(layer, "cap1"))["type"] == "first"
            await layer.send("cap1", {"type": "second"})
            assert (await self.receive(layer, "cap1"))["type"] == "second"

    async def test_capacity_is_per_channel(self) -> None:
        async with self.layer(capacity=1) as layer:
            await layer.send("cap-x", {"type": "x"})
            await layer.send("cap-y", {"type": "y"})
            with pytest.raises(ChannelFull):
                await layer.send("cap-x", {"type": "x2"})

    async def test_group_send_skips_full_member(self) -> None:
        async with self.layer(capacity=1, **self.skip_at_once) as layer:
            full, free = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("busy", full)
            await layer.group_add("busy", free)
            await layer.send(full, {"type": "already-here"})
            await layer.group_send("busy", {"type": "broadcast"})
            assert (await self.receive(layer, free))["type"] == "broadcast"
            assert (await self.receive(layer, full))["type"] == "already-here"
            assert await self.nothing_waiting(layer, full)
            stats = getattr(layer, "stats", None)
            if stats is not None:
                assert stats.group_full == 1

    async def test_group_send_over_capacity_is_skipped_and_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        # channels_redis's test_group_send_capacity: a member at capacity is skipped every
        # time, however fast or slow the layer moves messages to its receiving side.
        caplog.set_level(logging.INFO)  # a layer may skip where the member is (RabbitMQ)
        async with self.layer(capacity=3, **self.skip_at_once) as layer:
            channel = await layer.new_channel()
            await layer.group_add("test-group", channel)
            for n in range(1, 5):
                await layer.group_send("test-group", {"type": f"message.{n}"})
            got = [(await self.receive(layer, channel))["type"] for _ in range(3)]
            assert got == ["message.1", "message.2", "message.3"]
            assert await self.nothing_within(layer, channel)
            over = [r for r in caplog.records if "over capacity" in r.getMessage()]
            assert [(r.levelname, r.getMessage()) for r in over] == [
                ("INFO", "1 of 1 channels over capacity in group test-group")
            ]
            assert layer.stats.group_full == 1

    async def test_group_send_skips_only_the_member_at_capacity(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        # channels_redis's test_group_send_capacity_multiple_channels.
        caplog.set_level(logging.INFO)
        async with self.layer(capacity=3, **self.skip_at_once) as layer:
            one = await layer.new_channel()
            two = await layer.new_channel(prefix="channel_2")
            await layer.group_add("test-group", one)
            await layer.group_add("test-group", two)
            await layer.send(two, {"type": "message.0"})
            for n in range(1, 4):
                await layer.group_send("test-group", {"type": f"message.{n}"})
            got_one = [(await self.receive(layer, one))["type"] for _ in range(3)]
            assert got_one == ["message.1", "message.2", "message.3"]
            got_two = [(await self.receive(layer, two))["type"] for _ in range(3)]
            assert got_two == ["message.0", "message.1", "message.2"]
            assert await self.nothing_within(layer, two)
            over = [r.getMessage() for r in caplog.records if "over capacity" in r.getMessage()]
            assert over == ["1 of 2 channels over capacity in group test-group"]

    async def test_group_send_waits_for_a_full_member(self) -> None:
        # towpath's contract (issue 18): a full member is back-pressure, not loss. The
        # group_send returns once the member took the message, here after one receive.
        if not self.group_send_waits:
            pytest.skip(f"{type(self).__name__}'s group_send skips a full member at once")
        async with self.layer(capacity=1, group_send_timeout=WAIT) as layer:
            busy, free = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("waits", busy)
            await layer.group_add("waits", free)
            await layer.send(busy, {"type": "already-here"})
            sending = asyncio.ensure_future(layer.group_send("waits", {"type": "broadcast"}))
            assert (await self.receive(layer, free))["type"] == "broadcast"
            assert not sending.done()  # the busy member has no room yet
            assert (await self.receive(layer, busy))["type"] == "already-here"
            await asyncio.wait_for(sending, WAIT)
            assert (await self.receive(layer, busy))["type"] == "broadcast"
            assert (layer.stats.group_full, layer.stats.group_send_delayed) == (0, 1)

    async def test_process_channel_capacity_counts_what_was_sent_before(self) -> None:
        # A send right after group_sends filled a `!` channel is refused too.
        async with self.layer(capacity=2) as layer:
            channel = await layer.new_channel()
            await layer.group_add("filling", channel)
            await layer.group_send("filling", {"type": "g1"})
            await layer.group_send("filling", {"type": "g2"})
            with pytest.raises(ChannelFull):
                await layer.send(channel, {"type": "refused"})
            assert (await self.receive(layer, channel))["type"] == "g1"
            await layer.send(channel, {"type": "room-again"})
            assert (await self.receive(layer, channel))["type"] == "g2"
            assert (await self.receive(layer, channel))["type"] == "room-again"

    async def test_channel_capacity_by_glob(self) -> None:
        async with self.layer(capacity=5, channel_capacity={"small-*": 1}) as layer:
            await layer.send("small-one", {"type": "a"})
            with pytest.raises(ChannelFull):
                await layer.send("small-one", {"type": "b"})
            for n in range(5):
                await layer.send("large-one", {"type": "n", "n": n})
            with pytest.raises(ChannelFull):
                await layer.send("large-one", {"type": "n", "n": 5})

    async def test_channel_capacity_by_regex(self) -> None:
        capacities = {re.compile(r"^http\.request$"): 2}
        async with self.layer(capacity=1, channel_capacity=capacities) as layer:
            await layer.send("http.request", {"type": "a"})
            await layer.send("http.request", {"type": "b"})
            with pytest.raises(ChannelFull):
                await layer.send("http.request", {"type": "c"})
            await layer.send("http.requests", {"type": "a"})
            with pytest.raises(ChannelFull):
                await layer.send("http.requests", {"type": "b"})

    async def test_channel_capacity_first_match_wins(self) -> None:
        capacities = {"jobs.*": 2, "jobs.big": 4}
        async with self.layer(capacity=1, channel_capacity=capacities) as layer:
            await layer.send("jobs.big", {"type": "a"})
            await layer.send("jobs.big", {"type": "b"})
            with pytest.raises(ChannelFull):
                await layer.send("jobs.big", {"type": "c"})

    # -- expiry --------------------------------------------------------------------------------

    async def test_expired_message_is_not_delivered(self) -> None:
        async with self.layer(expiry=self.timing_unit) as layer:
            await layer.send("stale", {"type": "old"})
            await self.pass_time(self.timing_unit * 2)
            await layer.send("stale", {"type": "new"})
            assert (await self.receive(layer, "stale"))["type"] == "new"

    async def test_expired_messages_free_capacity(self) -> None:
        async with self.layer(expiry=self.timing_unit, capacity=2) as layer:
            await layer.send("stale-cap", {"type": "old"})
            await layer.send("stale-cap", {"type": "old"})
            await self.pass_time(self.timing_unit * 2)
            await layer.send("stale-cap", {"type": "new"})
            assert (await self.receive(layer, "stale-cap"))["type"] == "new"

    async def test_expired_process_specific_message(self) -> None:
        async with self.layer(expiry=self.timing_unit) as layer:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "old"})
            await self.pass_time(self.timing_unit * 2)
            await layer.send(channel, {"type": "new"})
            assert (await self.receive(layer, channel))["type"] == "new"

    async def test_group_membership_expires(self) -> None:
        async with self.layer(group_expiry=self.timing_unit) as layer:
            gone, renewed = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("expiring", gone)
            await self.pass_time(self.timing_unit * 2)
            await layer.group_add("expiring", renewed)
            await layer.group_send("expiring", {"type": "late"})
            assert (await self.receive(layer, renewed))["type"] == "late"
            assert await self.nothing_waiting(layer, gone)

    # -- event loops and close_pools -----------------------------------------------------------

    async def test_close_pools_keeps_the_layer_usable(self) -> None:
        # channels_redis's close_pools(): release this event loop's connections; the layer
        # goes on working, in this loop or another.
        async with self.layer() as layer:
            await layer.send("pooled", {"type": "before"})
            await layer.close_pools()
            assert (await self.receive(layer, "pooled"))["type"] == "before"
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "after"})
            assert (await self.receive(layer, channel))["type"] == "after"
            await layer.close_pools()
            await layer.close_pools()  # twice, and with nothing open: harmless

    async def test_close_pools_keeps_process_channels(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "before"})
            await layer.close_pools()
            assert (await self.receive(layer, channel))["type"] == "before"
            await layer.send(channel, {"type": "after"})
            assert (await self.receive(layer, channel))["type"] == "after"

    async def test_usable_from_one_event_loop_after_another(self) -> None:
        # Sync code calling the layer through async_to_sync: each call in a new event loop,
        # closed afterwards; with close_pools() at the end of a call and without.
        async with self.layer() as layer:

            async def round_trip(n: int, close_pools: bool) -> list[Any]:
                channel = await layer.new_channel()
                await layer.send(channel, {"type": "own", "n": n})
                await layer.send("across-loops", {"type": "normal", "n": n})
                got = [(await self.receive(layer, channel))["n"]]
                if n:
                    got.append((await self.receive(layer, "across-loops"))["n"])
                if close_pools:
                    await layer.close_pools()
                return got

            def sync_code() -> list[list[Any]]:
                return [
                    in_new_event_loop(lambda: round_trip(0, True)),
                    in_new_event_loop(lambda: round_trip(1, True)),
                    in_new_event_loop(lambda: round_trip(2, False)),
                    in_new_event_loop(lambda: round_trip(3, False)),
                ]

            assert await asyncio.to_thread(sync_code) == [[0], [1, 0], [2, 1], [3, 2]]
            assert (await self.receive(layer, "across-loops"))["n"] == 3

    async def test_process_channel_received_in_a_later_event_loop(self) -> None:
        # channels_redis's test_double_receive: channels made and sent to in some event
        # loops, received in later ones, each loop closed in between.
        async with self.layer(capacity=3) as layer:

            async def send_and_close(channel: str, message: dict[str, Any]) -> None:
                await layer.send(channel, message)
                await layer.close_pools()

            async def listen(channel: str) -> dict[str, Any]:
                message = await self.receive(layer, channel)
                await layer.close_pools()
                return message

            def sync_code() -> list[str]:
                one = in_new_event_loop(layer.new_channel)
                two = in_new_event_loop(layer.new_channel)
                in_new_event_loop(lambda: send_and_close(one, {"type": "test.message.1"}))
                in_new_event_loop(lambda: send_and_close(two, {"type": "test.message.2"}))
                return [
                    in_new_event_loop(lambda: listen(two))["type"],
                    in_new_event_loop(lambda: listen(one))["type"],
                ]

            assert await asyncio.to_thread(sync_code) == ["test.message.2", "test.message.1"]

    async def test_two_threads_with_loops_of_their_own(self) -> None:
        self.require_shared()
        async with self.layer() as layer:

            async def side(me: str, peer: str) -> list[Any]:
                own = await layer.new_channel()  # the same prefix in both threads
                await layer.send(f"to-{peer}", {"type": "hello", "from": me})
                for n in range(3):
                    await layer.send(own, {"type": "own", "n": n})
                got = [(await self.receive(layer, own))["n"] for _ in range(3)]
                got.append((await self.receive(layer, f"to-{me}"))["from"])
                return got

            left, right = await asyncio.gather(
                asyncio.to_thread(in_new_event_loop, lambda: side("left", "right")),
                asyncio.to_thread(in_new_event_loop, lambda: side("right", "left")),
            )
            assert left == [0, 1, 2, "right"]
            assert right == [0, 1, 2, "left"]

    # -- flush ---------------------------------------------------------------------------------

    async def test_flush_drops_messages(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.send("flushed", {"type": "gone"})
            await layer.send(channel, {"type": "gone"})
            await layer.flush()
            assert await self.nothing_waiting(layer, "flushed")
            assert await self.nothing_waiting(layer, channel)

    async def test_flush_drops_groups(self) -> None:
        async with self.layer() as layer:
            channel = await layer.new_channel()
            await layer.group_add("flushed-group", channel)
            await layer.flush()
            await layer.group_send("flushed-group", {"type": "gone"})
            assert await self.nothing_waiting(layer, channel)

    async def test_extensions_are_declared(self) -> None:
        async with self.layer() as layer:
            assert "groups" in layer.extensions
            assert "flush" in layer.extensions

    # -- receive_many --------------------------------------------------------------------------

    async def test_receive_many_names_the_channel(self) -> None:
        async with self.layer() as layer:
            await layer.send("many-b", {"type": "b"})
            channel, message = await asyncio.wait_for(
                layer.receive_many(["many-a", "many-b"]), WAIT
            )
            assert (channel, message) == ("many-b", {"type": "b"})

    async def test_receive_many_waits_on_all(self) -> None:
        async with self.layer() as layer:
            local = await layer.new_channel()
            waiting = asyncio.ensure_future(
                asyncio.wait_for(layer.receive_many(["wait-a", local]), WAIT)
            )
            await asyncio.sleep(0)
            await layer.send(local, {"type": "local"})
            assert await waiting == (local, {"type": "local"})

    async def test_receive_many_is_fair(self) -> None:
        async with self.layer(capacity=50) as layer:
            for n in range(20):
                await layer.send("fair-a", {"type": "a", "n": n})
                await layer.send("fair-b", {"type": "b", "n": n})
            got = [
                (await asyncio.wait_for(layer.receive_many(["fair-a", "fair-b"]), WAIT))[0]
                for _ in range(10)
            ]
            assert got.count("fair-a") >= 3 and got.count("fair-b") >= 3, got

    # -- cancellation --------------------------------------------------------------------------

    async def test_cancelled_receive_loses_nothing(self) -> None:
        async with self.layer() as layer:
            waiting = asyncio.ensure_future(layer.receive("cancelled"))
            await asyncio.sleep(0)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await layer.send("cancelled", {"type": "kept"})
            assert (await self.receive(layer, "cancelled"))["type"] == "kept"

    async def test_cancel_storm_loses_and_duplicates_nothing(self) -> None:
        async with self.layer(capacity=100) as layer:
            channel = await layer.new_channel()
            receivers = [asyncio.ensure_future(layer.receive(channel)) for _ in range(40)]
            await asyncio.sleep(0)
            for n in range(40):
                await layer.send(channel, {"type": "n", "n": n})
                if n % 2:
                    receivers[n].cancel()
            done = await asyncio.gather(*receivers, return_exceptions=True)
            got = [r["n"] for r in done if isinstance(r, dict)]
            while len(got) < 40:
                got.append((await self.receive(layer, channel))["n"])
            assert sorted(got) == list(range(40))
            assert await self.nothing_waiting(layer, channel)

    # -- bad input -----------------------------------------------------------------------------

    @pytest.mark.parametrize("name", BAD_CHANNEL_NAMES)
    async def test_bad_channel_name_is_a_type_error(self, name: str) -> None:
        async with self.layer() as layer:
            with pytest.raises(TypeError, match=re.escape(repr(name)[:40])):
                await layer.send(name, {"type": "x"})
            with pytest.raises(TypeError):
                await layer.receive(name)
            with pytest.raises(TypeError):
                await layer.group_add("fine", name)

    @pytest.mark.parametrize("name", BAD_GROUP_NAMES)
    async def test_bad_group_name_is_a_type_error(self, name: str) -> None:
        async with self.layer() as layer:
            with pytest.raises(TypeError, match=re.escape(repr(name)[:40])):
                await layer.group_add(name, "fine")
            with pytest.raises(TypeError):
                await layer.group_send(name, {"type": "x"})

    async def test_non_str_channel_name_is_a_type_error(self) -> None:
        async with self.layer() as layer:
            with pytest.raises(TypeError, match="123"):
                await layer.send(123, {"type": "x"})  # type: ignore[arg-type]

    @pytest.mark.parametrize("message", [None, "text", ["list"], b"bytes", 5])
    async def test_non_dict_message_is_a_type_error(self, message: Any) -> None:
        async with self.layer() as layer:
            with pytest.raises(TypeError, match="dict"):
                await layer.send("typed", message)
            with pytest.raises(TypeError, match="dict"):
                await layer.group_send("typed", message)

    async def test_unserialisable_message_is_a_type_error(self) -> None:
        async with self.layer() as layer:
            with pytest.raises(TypeError):
                await layer.send("typed", {"type": "x", "value": {1, 2}})
            await layer.send("typed", {"type": "fine"})
            assert (await self.receive(layer, "typed"))["type"] == "fine"

    # -- values --------------------------------------------------------------------------------

    async def test_every_value_type_round_trips(self) -> None:
        message = {
            "type": "types",
            "str": "héllo",
            "bytes": b"h\xc3\xa9llo\x00",
            "empty_bytes": b"",
            "int": -(2**40),
            "big": 2**63 - 1,
            "float": 3.25,
            "true": True,
            "false": False,
            "none": None,
            "list": [1, "two", b"three", [4.0, None]],
            "dict": {"nested": {"deeper": [b"x", {"k": "v"}]}},
            "headers": [[b"content-type", b"text/plain"]],
        }
        async with self.layer() as layer:
            await layer.send("types", message)
            received = await self.receive(layer, "types")
            assert received == message
            assert isinstance(received["bytes"], bytes) and isinstance(received["str"], str)
            assert isinstance(received["true"], bool) and isinstance(received["int"], int)

    async def test_encrypted_round_trip(self) -> None:
        keys = ["a-secret-key", "an-older-key"]
        async with self.layer(symmetric_encryption_keys=keys) as layer:
            channel = await layer.new_channel()
            await layer.group_add("secret", channel)
            await layer.send("secret-channel", {"type": "secret", "body": b"\x01"})
            await layer.group_send("secret", {"type": "secret.group"})
            assert (await self.receive(layer, "secret-channel"))["body"] == b"\x01"
            assert (await self.receive(layer, channel))["type"] == "secret.group"

    async def test_encryption_key_rotation(self) -> None:
        self.require_shared()
        async with (
            self.layer(symmetric_encryption_keys=["old-key"]) as old,
            self.layer(symmetric_encryption_keys=["new-key", "old-key"]) as rotated,
        ):
            await old.send("rotating", {"type": "from-old"})
            assert (await self.receive(rotated, "rotating"))["type"] == "from-old"
            await rotated.send("rotating", {"type": "from-new"})
            assert (await self.receive(rotated, "rotating"))["type"] == "from-new"
