"""WebSocket chat clients of the end-to-end affinity runs (``tests/e2e/test_affinity_*.py``,
``tests/e2e/test_embedded_ipc.py``): many clients talking in one group through ``workerapp``'s
``/chat/``, and the checks that nothing they said was lost."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect

from tests.support.waiting import WAIT

#: the talkers of :func:`chatting`
CLIENTS = 100
#: seconds between two messages of one client: 40 messages/s in all, 4,000 deliveries/s
PERIOD = 2.5
#: the workers' ``--heartbeat-interval`` and the servers' ``--heartbeat-timeout`` of these runs
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0


class Talker:
    """One client: sends ``index:seq`` every ``PERIOD`` (jittered) and records what it hears."""

    def __init__(self, index: int, socket: ClientConnection) -> None:
        self.index = index
        self.socket = socket
        #: loop time each of its messages was sent, by seq
        self.sent_at: list[float] = []
        #: seqs heard, by sender
        self.heard: dict[int, list[int]] = {}
        self.heard_count = 0
        self.log: list[tuple[float, int, int, str]] = []
        self.changed = asyncio.Event()

    async def talk(self, until: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, PERIOD))  # pacing, not synchronisation
        while not until.is_set():
            self.sent_at.append(time.monotonic())
            await self.socket.send(f"{self.index}:{len(self.sent_at) - 1}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PERIOD * random.uniform(0.8, 1.2)):
                    await until.wait()

    async def listen(self) -> None:
        async for text in self.socket:
            message, _, via = str(text).partition(" via ")
            sender, _, seq = message.partition(":")
            self.heard.setdefault(int(sender), []).append(int(seq))
            self.log.append((time.monotonic(), int(sender), int(seq), via))
            self.heard_count += 1
            self.changed.set()


@contextlib.asynccontextmanager
async def chatting(url: str) -> AsyncIterator[tuple[list[Talker], asyncio.Event]]:
    """100 connected talkers, talking until the event is set; listening until the end."""
    until = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(url, open_timeout=WAIT, max_queue=None))
            for _ in range(CLIENTS)
        ]
        talkers = [Talker(index, socket) for index, socket in enumerate(sockets)]
        tasks = [asyncio.create_task(t.listen()) for t in talkers]
        talking = [asyncio.create_task(t.talk(until)) for t in talkers]
        try:
            yield talkers, until
        finally:
            until.set()
            await asyncio.gather(*talking, return_exceptions=True)
            for task in tasks:
                task.cancel()


async def last_words_heard(talkers: list[Talker]) -> None:
    """Until every talker heard every sender's last message (bounded by the caller): whatever
    was sent before it has arrived or never will (each sender's messages come in order)."""
    for talker in talkers:
        for sender in talkers:
            last = len(sender.sent_at) - 1
            while last >= 0 and last not in talker.heard.get(sender.index, ())[-1:]:
                talker.changed.clear()
                await talker.changed.wait()


def check_everything_heard_in_order(talkers: list[Talker], span: list[float]) -> None:
    """Every talker heard every sender's messages, each once, in order; and the chat went on
    through the restarts (``span``: their start and end)."""
    wrong = [
        (talker.index, sender.index, sorted(set(range(len(sender.sent_at))) - set(heard)))
        for talker in talkers
        for sender in talkers
        if (heard := talker.heard.get(sender.index, [])) != list(range(len(sender.sent_at)))
    ]
    start, end = span
    if wrong:  # say where: each miss with the receiver's relays around it
        lines = [f"{len(wrong)} wrong; restarts from 0 to {end - start:.3f} s"]
        for receiver, sender, missing in wrong[:5]:
            heard = talkers[receiver].heard.get(sender)
            lines.append(f"receiver {receiver}, sender {sender}: {heard}")
            for seq in missing:
                sent = talkers[sender].sent_at[seq] - start
                lines.append(f"receiver {receiver} missed {sender}:{seq} sent at {sent:.3f}")
                lines += [
                    f"  heard {t - start:.3f} {a}:{b} via {v}"
                    for t, a, b, v in talkers[receiver].log
                    if abs(t - start - sent) < 0.3
                ]
        raise AssertionError("\n".join(lines))
    during = sum(start <= sent <= end for t in talkers for sent in t.sent_at)
    assert during >= CLIENTS * (end - start) / PERIOD / 2, (during, end - start)
    print(f"6 restarts in {end - start:.1f} s, {during} messages sent meanwhile, none lost")


@contextlib.asynccontextmanager
async def clients(url: str, count: int = 6) -> AsyncIterator[list[ClientConnection]]:
    """``count`` WebSocket clients connected to ``url`` until the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(connect(url, open_timeout=WAIT)) for _ in range(count)
        ]


async def each_hears_itself(sockets: list[ClientConnection], tag: str) -> int:
    """Until every client's own message comes back to it: its connection has a live consumer
    in the group again (after a re-dispatch). A message sent to a killed owner before it is
    declared gone is lost (at most once): that client tries again. Returns the attempts lost."""
    lost = 0
    for index, socket in enumerate(sockets):
        for attempt in range(20):
            text = f"{tag}-{index}-{attempt}"
            await socket.send(text)
            try:
                async with asyncio.timeout(1.0):
                    while not str(await socket.recv()).startswith(f"{text} via "):
                        pass
                break
            except TimeoutError:
                lost += 1
        else:
            raise AssertionError(f"client {index} never heard itself again")
    return lost


async def everyone_hears_everyone(sockets: list[ClientConnection], tag: str) -> set[str]:
    """Each client sends one message; every client receives all of them. Returns the workers
    (the `via` tags) that relayed them."""
    sent = [f"{tag}-{index}" for index in range(len(sockets))]
    for socket, text in zip(sockets, sent, strict=True):
        await socket.send(text)
    relays: set[str] = set()
    for socket in sockets:
        heard: set[str] = set()
        while heard != set(sent):
            text, _, relay = str(await socket.recv()).partition(" via ")
            if text in sent:
                heard.add(text)
                relays.add(relay)
    return relays
