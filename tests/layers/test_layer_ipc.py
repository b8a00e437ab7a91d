"""IPCChannelLayer: the conformance suite, plus what only this layer promises (prefixes,
size limits, a full store, dead receivers, and group order across real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ipc_helper import Agent, blob
from tests.support.waiting import WAIT, until
from towpath.layers.base import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    MessageTooLarge,
)
from towpath.layers.ipc import IPCChannelLayer, StoreFull, check_store, describe_store
from towpath.testing import ChannelLayerConformance


class TestIPCConformance(ChannelLayerConformance):
    injectable_clock = True  # expiry is computed in this process: the suite moves the clock
    unsupported = {
        "test_process_channel_received_in_a_later_event_loop": (
            "a '!' channel belongs to the event loop that made it (docs/ipc.md#limits): its "
            "inbox file is closed with that loop, and later sends to it are dropped as dead"
        )
    }

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> None:
        self.directory = str(tmp_path)

    async def make_layer(self, **config: Any) -> IPCChannelLayer:
        return IPCChannelLayer(prefix="conformance", directory=self.directory, **config)


@contextlib.asynccontextmanager
async def layers(
    directory: Path, count: int = 1, **config: Any
) -> AsyncIterator[list[IPCChannelLayer]]:
    made = [IPCChannelLayer(directory=str(directory), **config) for _ in range(count)]
    try:
        yield made
    finally:
        for layer in made:
            await layer.close()


def state_of(layer: IPCChannelLayer) -> Any:
    """The layer's state for this event loop (made by its first call here)."""
    return layer._states[asyncio.get_running_loop()]


def owns(layer: IPCChannelLayer, inbox: str) -> bool:
    state = layer._states.get(asyncio.get_running_loop())
    return state is not None and inbox in state.own


def waits_on(layer: IPCChannelLayer, channel: str, *, starved: bool = False) -> bool:
    """The layer registered as a waiter of the normal ``channel`` (``starved``: found no free
    waiter slot for it)."""
    state = layer._states.get(asyncio.get_running_loop())
    return state is not None and channel in (state.starved if starved else state.registered)


# -- configuration -----------------------------------------------------------------------------


def test_no_argument_is_required(tmp_path: Path) -> None:
    layer = IPCChannelLayer()
    assert layer.prefix == "towpath"
    assert layer.path.endswith("/towpath-ipc-towpath")
    assert "groups" in layer.extensions


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "has/slash"}, "prefix"),
        ({"prefix": "x" * 65}, "prefix"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"max_message_bytes": 2 << 20, "queue_bytes": 1 << 20}, "max_message_bytes"),
        ({"queue_bytes": 100}, "queue_bytes"),
        ({"queue_bytes": True}, "queue_bytes"),
        ({"inbox_capacity": 0}, "inbox_capacity"),
    ],
)
def test_bad_config_names_the_setting(config: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidChannelLayerError, match=names):
        IPCChannelLayer(**config)


async def test_store_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "towpath-ipc-clash").write_text("not a directory")
    layer = IPCChannelLayer(prefix="clash", directory=str(tmp_path))
    with pytest.raises(InvalidChannelLayerError, match="not a directory"):
        await layer.send("x", {"type": "x"})


async def test_store_is_private(tmp_path: Path) -> None:
    async with layers(tmp_path) as (layer,):
        await layer.send("private", {"type": "x"})
        assert os.stat(layer.path).st_mode & 0o777 == 0o700
        assert os.stat(os.path.join(layer.path, "q-private")).st_mode & 0o777 == 0o600


# -- prefixes ----------------------------------------------------------------------------------


async def test_prefixes_isolate_applications(tmp_path: Path) -> None:
    async with (
        layers(tmp_path, prefix="app-a") as (a,),
        layers(tmp_path, prefix="app-b") as (b,),
    ):
        channel = await b.new_channel()
        await b.group_add("room", channel)
        await a.group_add("room", "a-member")
        await a.send("shared-name", {"type": "from-a"})
        await a.group_send("room", {"type": "from-a"})
        await b.send("shared-name", {"type": "from-b"})
        assert (await asyncio.wait_for(b.receive("shared-name"), WAIT))["type"] == "from-b"
        assert (await asyncio.wait_for(a.receive("shared-name"), WAIT))["type"] == "from-a"
        assert (await asyncio.wait_for(a.receive("a-member"), WAIT))["type"] == "from-a"
        await a.flush()  # flushes app-a only
        await b.group_send("room", {"type": "from-b"})
        assert (await asyncio.wait_for(b.receive(channel), WAIT))["type"] == "from-b"
        assert a.path != b.path


# -- sizes -------------------------------------------------------------------------------------


async def test_message_over_the_limit_is_rejected_and_nothing_sent(tmp_path: Path) -> None:
    async with layers(tmp_path, max_message_bytes=1000) as (layer,):
        channel = await layer.new_channel()
        await layer.group_add("big", channel)
        for send in (
            lambda: layer.send("big-normal", {"type": "x", "body": blob(2000)}),
            lambda: layer.send(channel, {"type": "x", "body": blob(2000)}),
            lambda: layer.group_send("big", {"type": "x", "body": blob(2000)}),
        ):
            with pytest.raises(MessageTooLarge, match=r"max_message_bytes=1000") as caught:
                await send()
            assert re.search(r"\b20\d\d bytes", str(caught.value)), caught.value
            assert isinstance(caught.value, ValueError)
        await layer.send("big-normal", {"type": "small"})
        assert (await asyncio.wait_for(layer.receive("big-normal"), WAIT))["type"] == "small"
        await layer.send(channel, {"type": "small"})
        assert (await asyncio.wait_for(layer.receive(channel), WAIT))["type"] == "small"


async def test_full_store_is_a_clear_channel_full(tmp_path: Path) -> None:
    config = {"capacity": 1000, "queue_bytes": 8192, "max_message_bytes": 4096}
    # group_send_timeout=0: skipped at once (waiting: test_layer_group_backpressure.py)
    async with layers(tmp_path, 2, **config, group_send_timeout=0) as (owner, sender):
        specific = await owner.new_channel()
        for channel in ("store-full", specific):
            await sender.send(channel, {"type": "x", "body": blob(3000)})
            await sender.send(channel, {"type": "x", "body": blob(3000)})
            with pytest.raises(StoreFull, match=r"queue_bytes=8192") as caught:
                await sender.send(channel, {"type": "x", "body": blob(3000)})
            assert isinstance(caught.value, ChannelFull)
            sent = 2
            for _ in range(sent):
                message = await asyncio.wait_for(owner.receive(channel), WAIT)
                assert message["body"] == blob(3000)
            await sender.send(channel, {"type": "again"})  # room again
            assert (await asyncio.wait_for(owner.receive(channel), WAIT))["type"] == "again"
        await sender.group_add("full-group", "store-full")
        for _ in range(3):
            await sender.group_send("full-group", {"type": "x", "body": blob(3000)})
        assert sender.stats.group_full == 1  # skipped and counted, never raised


async def test_big_messages_cross_between_instances(tmp_path: Path) -> None:
    async with layers(tmp_path, 2) as (owner, sender):
        specific = await owner.new_channel()
        body = blob(900_000)
        await sender.send(specific, {"type": "big", "body": body})
        await sender.send("big", {"type": "big", "body": body})
        assert (await asyncio.wait_for(owner.receive(specific), WAIT))["body"] == body
        assert (await asyncio.wait_for(owner.receive("big"), WAIT))["body"] == body


# -- process-specific channels -----------------------------------------------------------------


async def test_capacity_of_another_instances_channel(tmp_path: Path) -> None:
    async with layers(tmp_path, 2, capacity=2, group_send_timeout=0) as (owner, sender):
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "n", "n": 0})
        await sender.send(channel, {"type": "n", "n": 1})
        # Full at once, whether or not the owner has read them yet: the backlog table counts
        # what waits in its inbox file and what it took into its memory.
        with pytest.raises(ChannelFull):
            await sender.send(channel, {"type": "n", "n": 2})
        await sender.group_add("cap", channel)
        await sender.group_send("cap", {"type": "skipped"})
        assert sender.stats.full == 1 and sender.stats.group_full == 1
        assert (await asyncio.wait_for(owner.receive(channel), WAIT))["n"] == 0
        await sender.send(channel, {"type": "n", "n": 3})  # below capacity again
        assert [(await asyncio.wait_for(owner.receive(channel), WAIT))["n"] for _ in "ab"] == [
            1,
            3,
        ]


async def test_closed_instances_channels_are_dropped_and_counted(tmp_path: Path) -> None:
    async with layers(tmp_path, 2) as (owner, sender):
        channel = await owner.new_channel()
        await sender.group_add("gone", channel)
        await owner.close()
        await sender.send(channel, {"type": "lost"})
        await sender.group_send("gone", {"type": "lost"})
        assert sender.stats.dead == 2
        assert not [name for name in os.listdir(owner.path) if name.startswith("i-")]


async def test_another_instances_channel_cannot_be_received(tmp_path: Path) -> None:
    async with layers(tmp_path, 2) as (owner, other):
        channel = await owner.new_channel()
        with pytest.raises(ChannelLayerError, match="not made by this layer instance"):
            await other.receive(channel)


async def test_channel_of_a_live_event_loop_cannot_be_received_in_another(
    tmp_path: Path,
) -> None:
    async with layers(tmp_path) as (layer,):
        channel = await layer.new_channel()

        async def elsewhere() -> None:
            await layer.receive(channel)

        with pytest.raises(ChannelLayerError, match="read by another process"):
            await asyncio.to_thread(asyncio.run, elsewhere())


async def test_made_up_process_channel_is_refused_without_claiming_it(tmp_path: Path) -> None:
    async with layers(tmp_path) as (reader,):
        refusal = "cannot receive on 'made-up!one': it was not made by this layer instance"
        with pytest.raises(ChannelLayerError, match=refusal):
            await reader.receive("made-up!one")
        assert not owns(reader, "made-up!")
        inbox_file = os.path.join(reader.path, "i-made-up!")
        assert not await asyncio.to_thread(os.path.exists, inbox_file)


# -- normal channels ---------------------------------------------------------------------------


async def test_receivers_in_two_instances_share_a_channel(tmp_path: Path) -> None:
    async with layers(tmp_path, 3, capacity=500) as (one, two, sender):
        got: list[int] = []

        async def drain(layer: IPCChannelLayer) -> None:
            while True:
                got.append((await layer.receive("shared"))["n"])

        tasks = [asyncio.create_task(drain(one)), asyncio.create_task(drain(two))]
        try:
            for n in range(300):
                await sender.send("shared", {"type": "n", "n": n})
                if n % 50 == 0:
                    await asyncio.sleep(0)
            await until(lambda: len(got) == 300)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert sorted(got) == list(range(300))  # each exactly once


async def taken_not_received(
    worker: IPCChannelLayer, channel: str, receiving: asyncio.Future[Any]
) -> None:
    """The worker's wake-up moves a message of ``channel`` into its mailbox and wakes
    ``receiving``; cancel that receive before it runs, so that the message stays taken by the
    worker but never received. (The callback that fills the mailbox and the receive it wakes
    run in consecutive loop iterations, and this checks between them.)"""
    mailbox = state_of(worker).mailbox
    async with asyncio.timeout(WAIT):
        while not mailbox.length(channel) and not receiving.done():  # noqa: ASYNC110 (loop turns)
            await asyncio.sleep(0)
    receiving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiving
    assert receiving.cancelled() and mailbox.length(channel) == 1


async def test_stop_receiving_gives_taken_messages_back(tmp_path: Path) -> None:
    async with layers(tmp_path, 2) as (worker, other):
        receiving = asyncio.ensure_future(worker.receive("handed"))
        await until(lambda: waits_on(worker, "handed"))
        await other.send("handed", {"type": "first"})
        await other.send("handed", {"type": "second"})
        await taken_not_received(worker, "handed", receiving)
        await worker.stop_receiving(["handed"])
        assert (await asyncio.wait_for(other.receive("handed"), WAIT))["type"] == "first"
        assert (await asyncio.wait_for(other.receive("handed"), WAIT))["type"] == "second"


async def test_close_gives_taken_messages_back(tmp_path: Path) -> None:
    async with layers(tmp_path, 2) as (worker, other):
        receiving = asyncio.ensure_future(worker.receive("closing"))
        await until(lambda: waits_on(worker, "closing"))
        await other.send("closing", {"type": "kept"})
        await taken_not_received(worker, "closing", receiving)
        await worker.close()
        assert (await asyncio.wait_for(other.receive("closing"), WAIT))["type"] == "kept"


async def test_expired_messages_are_shed_and_counted(tmp_path: Path) -> None:
    async with layers(tmp_path, 2, expiry=0.05, capacity=2) as (sender, receiver):
        await sender.send("shed", {"type": "old"})
        await sender.send("shed", {"type": "old"})
        await asyncio.sleep(0.1)  # let them expire (the expiry itself is under test)
        await sender.send("shed", {"type": "new"})  # a full channel sheds its expired head
        assert sender.stats.expired == 2
        assert (await asyncio.wait_for(receiver.receive("shed"), WAIT))["type"] == "new"


# -- wake-ups ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [19, 100])
async def test_a_full_wake_up_pipe_loses_no_wake_up(tmp_path: Path, length: int) -> None:
    """When a receiver's FIFO is full, a sender's wake-up line cannot be written; the
    receiver then finds its pipe full and looks at every channel it waits on. (Lines of
    ``length`` bytes: the longer, the more room each pipe page wastes.)"""
    async with layers(tmp_path, 2) as (receiver, sender):
        waiting = asyncio.ensure_future(receiver.receive("flooded"))
        await until(lambda: waits_on(receiver, "flooded"))
        state = state_of(receiver)
        flood = os.open(
            os.path.join(receiver.path, "w-" + state.token.decode()), os.O_WRONLY | os.O_NONBLOCK
        )
        try:
            for line in (b"x" * (length - 1) + b"\n", b"\n"):  # then the pipe's last bytes
                with contextlib.suppress(BlockingIOError):
                    while True:
                        os.write(flood, line)
        finally:
            os.close(flood)
        await sender.send("flooded", {"type": "arrives"})  # its wake-up line does not fit
        assert (await asyncio.wait_for(waiting, WAIT))["type"] == "arrives"


async def test_no_free_waiter_slot_falls_back_to_looking_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from towpath.layers.ipc import queues

    monkeypatch.setattr(queues, "WAITER_SLOTS", 1)
    async with layers(tmp_path, 3) as (first, second, sender):
        one = asyncio.ensure_future(first.receive("crowded"))
        await until(lambda: waits_on(first, "crowded"))
        two = asyncio.ensure_future(second.receive("crowded"))
        await until(lambda: waits_on(second, "crowded", starved=True))  # no slot left for it
        await sender.send("crowded", {"type": "a"})
        await sender.send("crowded", {"type": "b"})
        got = await asyncio.wait_for(asyncio.gather(one, two), WAIT)
        assert sorted(message["type"] for message in got) == ["a", "b"]


# -- inspection --------------------------------------------------------------------------------


async def test_store_can_be_inspected(tmp_path: Path) -> None:
    async with layers(tmp_path) as (layer,):
        channel = await layer.new_channel()
        await layer.group_add("inspected", channel)
        await layer.send("inspected", {"type": "x"})
        report = describe_store(layer.path)
        assert report["groups"] == {"inspected": 1}
        queues = {q["file"]: q for q in report["queues"]}  # type: ignore[attr-defined]
        assert queues["q-inspected"]["messages"] == 1
        assert check_store(layer.path) == []
        command = [sys.executable, "-m", "towpath.layers.ipc", "--directory", str(tmp_path)]
        cli = await asyncio.create_subprocess_exec(
            *command, "--check", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 0 and out.decode().strip().endswith(": ok"), out


# -- group order across real processes ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_group_order_is_the_same_for_every_member_and_joins_cut_cleanly(
    tmp_path: Path,
) -> None:
    """Three processes group_send at once to three member processes and a normal channel; a
    fourth member joins in the middle of the storm. Every member sees one and the same order,
    and the late member sees exactly a tail of it: a join falls between two group_sends."""
    prefix, directory = "storm", str(tmp_path)
    config = {"capacity": 5000}
    per_sender = 400
    agents = await asyncio.gather(*(Agent.start(prefix, directory, config) for _ in range(7)))
    members, senders, late = agents[:3], agents[3:6], agents[6]
    async with layers(tmp_path, prefix=prefix, capacity=5000) as (here,):
        try:
            channels = [await member.call("new_channel") for member in members]
            late_channel = await late.call("new_channel")
            for channel in channels:
                await here.group_add("storm", channel)
            await here.group_add("storm", "storm-normal")
            receiving = [
                member.submit(
                    "receive_n", channel=channel, count=3 * per_sender + 1, field="id", timeout=40
                )
                for member, channel in zip(members, channels, strict=True)
            ]
            late_receiving = late.submit(
                "receive_until", channel=late_channel, field="id", stop="end", timeout=40
            )
            storms = [
                sender.submit("group_send_many", group="storm", count=per_sender, tag=f"s{i}")
                for i, sender in enumerate(senders)
            ]
            normal: list[str] = []
            while len(normal) < 100:  # well into the storm: the late member joins now
                normal.append((await asyncio.wait_for(here.receive("storm-normal"), WAIT))["id"])
            await late.call("group_add", group="storm", channel=late_channel)
            await asyncio.gather(*storms)
            await here.group_send("storm", {"type": "storm", "id": "end"})
            while len(normal) < 3 * per_sender + 1:
                normal.append((await asyncio.wait_for(here.receive("storm-normal"), WAIT))["id"])
            orders = [*await asyncio.gather(*receiving), normal]
            late_order = await late_receiving
        finally:
            await asyncio.gather(*(agent.stop() for agent in agents))
    first = orders[0]
    assert first[-1] == "end" and len(first) == 3 * per_sender + 1
    for order in orders[1:]:
        assert order == first  # one total order, whatever the member
    for tag in ("s0", "s1", "s2"):
        mine = [int(i.split(":")[1]) for i in first if i.startswith(tag + ":")]
        assert mine == list(range(per_sender))  # each sender's own order kept
    assert late_order, "the late member joined before the end marker"
    cut = len(first) - 1 - len(late_order)
    assert 100 <= cut < len(first) - 1
    assert late_order == first[cut:-1]  # a tail: nothing before its join, everything after
    assert check_store(os.path.join(directory, f"towpath-ipc-{prefix}")) == []
