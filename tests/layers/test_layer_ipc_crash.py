"""IPCChannelLayer under SIGKILL: killed at any point, a process corrupts nothing and blocks no
one. Workers are killed in a loop at random moments of their traffic while the others go on;
then processes are stopped dead inside each critical section and killed there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ipc_helper import CRASH_CHANNEL, CRASH_GROUP, Agent, start_crash_worker
from tests.support.waiting import WAIT
from towpath.layers.ipc import IPCChannelLayer, check_store

pytestmark = pytest.mark.slow

PREFIX = "crash"
CONFIG = {"capacity": 200, "expiry": 5}
#: SIGKILLs per run of the loop (each followed by a replacement worker): 6 to 10 s here
KILLS = 30


@dataclass(eq=False)
class Worker:
    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    progress: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            event = json.loads(line)
            self.lines.append(event)
            if event["event"] == "ready":
                self.ready.set()
            elif event["event"] == "progress":
                self.progress = event["ops"]

    def failure(self) -> str | None:
        """Why this worker failed on its own (stuck, or died unkilled), if it did."""
        stuck = [event for event in self.lines if event["event"] == "stuck"]
        if stuck:
            return f"worker {self.index} stuck: {stuck[0]}"
        if self.process.returncode is not None:
            return f"worker {self.index} exited {self.process.returncode} by itself"
        return None

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self.reader is not None:
            await self.reader


async def spawn(directory: str, index: int) -> Worker:
    worker = Worker(index, await start_crash_worker(PREFIX, directory, index, CONFIG))
    worker.reader = asyncio.create_task(worker.read())
    return worker


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path)


async def final_round(directory: str) -> None:
    """After the carnage: a fresh process's layer and two new processes do every kind of
    operation, and the store is sound."""
    layer = IPCChannelLayer(prefix=PREFIX, directory=directory, capacity=1000)
    agents = await asyncio.gather(*(Agent.start(PREFIX, directory, CONFIG) for _ in range(2)))
    try:
        channels = [await agent.call("new_channel") for agent in agents]
        for agent, channel in zip(agents, channels, strict=True):
            await agent.call("group_add", group="final", channel=channel)
        await layer.group_send("final", {"type": "final"})
        for agent, channel in zip(agents, channels, strict=True):
            assert (await agent.call("receive", channel=channel))["type"] == "final"
        await agents[0].call("send", channel=channels[1], message={"type": "peer"})
        assert (await agents[1].call("receive", channel=channels[1]))["type"] == "peer"
        await layer.send("final-normal", {"type": "normal"})
        assert (await agents[0].call("receive", channel="final-normal"))["type"] == "normal"
        await layer.group_send(CRASH_GROUP, {"type": "to-the-dead"})  # members long gone
        await layer.send(CRASH_CHANNEL, {"type": "work"})
        with contextlib.suppress(TimeoutError):
            while True:  # drain what the workers left (expired or not): it must parse
                await asyncio.wait_for(layer.receive(CRASH_CHANNEL), 0.2)
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))
        await layer.close()
    assert check_store(os.path.join(directory, f"towpath-ipc-{PREFIX}")) == []


@pytest.mark.timeout(90)
async def test_killing_processes_in_a_loop_corrupts_and_blocks_nothing(store: str) -> None:
    rng = random.Random(20240611)
    workers = {index: await spawn(store, index) for index in range(4)}
    next_index = len(workers)
    kills = 0
    try:
        for worker in workers.values():
            await asyncio.wait_for(worker.ready.wait(), WAIT)
        while kills < KILLS:
            victim = rng.choice(list(workers.values()))
            await asyncio.sleep(rng.uniform(0.0, 0.06))  # a random moment of its traffic
            await victim.kill()
            kills += 1
            del workers[victim.index]
            survivors = {worker: worker.progress for worker in workers.values()}
            replacement = await spawn(store, next_index)
            workers[next_index] = replacement
            next_index += 1
            # Everyone alive keeps completing operations; none says it is stuck.
            async with asyncio.timeout(WAIT):
                await replacement.ready.wait()
                while any(w.progress <= before for w, before in survivors.items()):
                    failed = [w.failure() for w in workers.values() if w.failure()]
                    assert not failed, failed
                    await asyncio.sleep(0.005)
            failed = [w.failure() for w in workers.values() if w.failure()]
            assert not failed, failed
    finally:
        await asyncio.gather(*(worker.kill() for worker in workers.values()))
    await final_round(store)
    directory = os.path.join(store, f"towpath-ipc-{PREFIX}")
    leftovers = [name for name in os.listdir(directory) if name[:2] in ("i-", "w-")]
    assert leftovers == [], leftovers  # what the dead left was swept or buried


@contextlib.asynccontextmanager
async def held(store: str, label: str, *, channel: bool = True) -> AsyncIterator[Agent]:
    """An agent that stops dead at checkpoint ``label`` of its next critical section; the
    caller triggers it, waits for ``holding``, and the agent is SIGKILLed on exit."""
    agent = await Agent.start(PREFIX, store, CONFIG)
    try:
        if channel:
            await agent.call("new_channel")  # its loop state is made: no lock taken later
        await agent.call("hold", label=label)
        yield agent
    finally:
        await agent.kill()


async def holding(agent: Agent) -> None:
    event = await agent.event(WAIT)
    assert event["event"] == "holding", event


@pytest.mark.timeout(60)
async def test_killed_while_holding_the_group_lock(store: str) -> None:
    async with IPCLayer(store) as here:
        member = await here.new_channel()
        await here.group_add("locked", member)
        async with held(store, "groups.locked") as agent:
            agent.submit("group_add", group="locked", channel="never-added")
            await holding(agent)
        # Killed holding the store's lock: the kernel released it (a lock that outlived its
        # holder would block the event loop here until the test's timeout fails it).
        await here.group_send("locked", {"type": "after"})
        assert (await asyncio.wait_for(here.receive(member), WAIT))["type"] == "after"
        await asyncio.wait_for(here.group_add("locked", "added-later"), WAIT)
        await here.group_send("locked", {"type": "again"})
        assert (await asyncio.wait_for(here.receive("added-later"), WAIT))["type"] == "again"
        assert (await asyncio.wait_for(here.receive(member), WAIT))["type"] == "again"
        assert check_store(here.path) == []


@pytest.mark.timeout(60)
async def test_killed_between_writing_a_message_and_publishing_it(store: str) -> None:
    async with IPCLayer(store) as here:
        async with held(store, "queue.written") as agent:
            agent.submit("send", channel="half", message={"type": "never-published"})
            await holding(agent)
        await asyncio.wait_for(here.send("half", {"type": "published"}), WAIT)
        assert (await asyncio.wait_for(here.receive("half"), WAIT))["type"] == "published"
        await here.send("half", {"type": "marker"})
        assert (await asyncio.wait_for(here.receive("half"), WAIT))["type"] == "marker"
        assert check_store(here.path) == []


@pytest.mark.timeout(60)
async def test_killed_while_taking_a_message(store: str) -> None:
    async with IPCLayer(store) as here:
        await here.send("taking", {"type": "kept"})
        async with held(store, "queue.taking") as agent:
            agent.submit("receive", channel="taking")
            await holding(agent)
        # Its take never became visible: the message is still there, once.
        assert (await asyncio.wait_for(here.receive("taking"), WAIT))["type"] == "kept"
        await here.send("taking", {"type": "marker"})
        assert (await asyncio.wait_for(here.receive("taking"), WAIT))["type"] == "marker"
        assert check_store(here.path) == []


@pytest.mark.timeout(60)
async def test_killed_while_draining_its_inbox(store: str) -> None:
    async with IPCLayer(store) as here:
        async with held(store, "queue.draining", channel=False) as agent:
            channel = await agent.call("new_channel")
            await here.send(channel, {"type": "wakes-it"})  # it drains, and stops inside
            await holding(agent)
        await asyncio.wait_for(here.send(channel, {"type": "to-the-dead"}), WAIT)
        assert here.stats.dead == 1  # found dead although it was not asleep
        mine = await here.new_channel()
        await here.send(mine, {"type": "alive"})
        assert (await asyncio.wait_for(here.receive(mine), WAIT))["type"] == "alive"
        assert check_store(here.path) == []


@pytest.mark.timeout(60)
async def test_killed_while_compacting_a_queue(store: str) -> None:
    async with IPCLayer(store, capacity=1000) as here:
        # 35 records of ~60 kB. A take compacts once the consumed prefix passes 1 MiB and what
        # is left fits below the head the queue had before that take: not within 17 takes,
        # at the 18th, which the agent makes and is killed in.
        body = b"x" * 60_000
        for n in range(35):
            await here.send("compact", {"type": "n", "n": n, "body": body})
        for n in range(17):
            assert (await asyncio.wait_for(here.receive("compact"), WAIT))["n"] == n
        async with held(store, "queue.compacting") as agent:
            agent.submit("receive", channel="compact")
            await holding(agent)
        rest = [(await asyncio.wait_for(here.receive("compact"), WAIT))["n"] for _ in range(18)]
        assert rest == list(range(17, 35))  # its take never became visible
        assert check_store(here.path) == []


@contextlib.asynccontextmanager
async def IPCLayer(store: str, **config: Any) -> AsyncIterator[IPCChannelLayer]:
    layer = IPCChannelLayer(prefix=PREFIX, directory=store, **config)
    try:
        yield layer
    finally:
        await layer.close()
