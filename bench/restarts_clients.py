"""The chat clients of ``python -m bench restarts`` and what their logs add up to.

A :class:`Client` holds one WebSocket to the chat and keeps it: when the server drops it, it
counts the drop and reconnects with back-off (50 ms doubling to 1 s, jittered), as a browser
client with a reconnecting socket does; the consumer re-joins the group on connect. While
talking it sends ``index:seq`` every ``period`` (jittered; a send due while offline goes out
once back online) and it logs every message it hears with the time, so :func:`analyse` can
count what was lost, missed, repeated or reordered and how long delivery took, all on this
process's one monotonic clock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

__all__ = ["OPEN_TIMEOUT", "Client", "analyse", "drained", "first"]

BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
OPEN_TIMEOUT = 10.0


async def first(*events: asyncio.Event, within: float | None = None) -> None:
    """Until one of ``events`` is set (or ``within`` seconds pass)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Client:
    """One chat client: stays connected (reconnecting when dropped), sends ``index:seq`` every
    ``period`` (jittered) while ``talking``, and logs every message it hears."""

    def __init__(self, index: int, url: str, period: float, progress: asyncio.Event) -> None:
        self.index = index
        self.url = url
        self.period = period
        self.progress = progress  # set on every message heard (for the drain)
        self.socket: ClientConnection | None = None
        self.online = asyncio.Event()
        self.stopping = False
        #: monotonic time each of its messages was sent, by seq
        self.sent_at: list[float] = []
        #: seqs whose send failed (the connection closed): not counted as sent
        self.unsure: set[int] = set()
        #: (sender, seq, time heard), in arrival order
        self.log: list[tuple[int, int, float]] = []
        self.heard: set[tuple[int, int]] = set()
        #: [opened, closed] per connection; closed is +inf while open
        self.intervals: list[list[float]] = []
        self.drops = 0
        self.failed_connects = 0

    async def connected(self) -> None:
        """Run until ``stop()``: connect, listen, reconnect with back-off when dropped."""
        backoff = BACKOFF_MIN
        while not self.stopping:
            try:
                socket = await connect(self.url, open_timeout=OPEN_TIMEOUT, max_queue=None)
            except (OSError, TimeoutError, WebSocketException):
                self.failed_connects += 1
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # back-off, by design
                backoff = min(2 * backoff, BACKOFF_MAX)
                continue
            if self.stopping:  # stop() came while connecting
                await socket.close()
                return
            backoff = BACKOFF_MIN
            self.intervals.append([time.monotonic(), float("inf")])
            self.socket = socket
            self.online.set()
            with contextlib.suppress(ConnectionClosed):
                async for text in socket:
                    now = time.monotonic()
                    message = str(text).partition(" via ")[0]
                    sender, _, seq = message.partition(":")
                    key = (int(sender), int(seq))
                    self.log.append((*key, now))
                    self.heard.add(key)
                    self.progress.set()
            self.intervals[-1][1] = time.monotonic()
            self.online.clear()
            self.socket = None
            if not self.stopping:
                self.drops += 1

    async def talk(self, until: asyncio.Event) -> None:
        await first(until, within=random.uniform(0, self.period))  # spread the clients out
        while not until.is_set():
            if self.socket is None:
                await first(self.online, until)
                continue
            seq = len(self.sent_at)
            self.sent_at.append(time.monotonic())
            try:
                await self.socket.send(f"{self.index}:{seq}")
            except ConnectionClosed:
                self.unsure.add(seq)  # the connection went meanwhile: sent or not, who knows
            await first(until, within=self.period * random.uniform(0.8, 1.2))

    async def stop(self) -> None:
        self.stopping = True
        if self.socket is not None:
            await self.socket.close()

    def was_online(self, at: float) -> bool:
        i = bisect.bisect_right(self.intervals, at, key=lambda interval: interval[0]) - 1
        return i >= 0 and at <= self.intervals[i][1]


def _expected_last(clients: Sequence[Client]) -> list[tuple[Client, int, int]]:
    """(receiver, sender, seq): each sender's last message each receiver should get."""
    pending = []
    for receiver in clients:
        for sender in clients:
            for seq in range(len(sender.sent_at) - 1, -1, -1):
                if seq not in sender.unsure and receiver.was_online(sender.sent_at[seq]):
                    pending.append((receiver, sender.index, seq))
                    break
    return pending


async def drained(clients: Sequence[Client], progress: asyncio.Event, within: float) -> bool:
    """Until every receiver heard every sender's last message it should get (each sender's
    messages arrive in order, so the rest has arrived or never will); False on timeout."""
    deadline = time.monotonic() + within
    pending = _expected_last(clients)
    while True:
        pending = [(r, s, seq) for r, s, seq in pending if (s, seq) not in r.heard]
        left = deadline - time.monotonic()
        if not pending:
            return True
        if left <= 0:
            return False
        progress.clear()
        await first(progress, within=left)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def analyse(clients: Sequence[Client], window: tuple[float, float]) -> dict[str, float]:
    """The run's figures from what the clients sent and heard."""
    lost = missed_offline = duplicates = out_of_order = 0
    outside: list[float] = []
    inside: list[float] = []
    for receiver in clients:
        seen: set[tuple[int, int]] = set()
        highest: dict[int, int] = {}
        for index, seq, heard_at in receiver.log:
            if (index, seq) in seen:
                duplicates += 1
                continue
            seen.add((index, seq))
            if seq < highest.get(index, -1):
                out_of_order += 1
            highest[index] = max(seq, highest.get(index, -1))
            sent_at = clients[index].sent_at[seq]
            latency = 1000 * (heard_at - sent_at)
            (inside if window[0] <= sent_at <= window[1] else outside).append(latency)
        for sender in clients:
            for seq, sent_at in enumerate(sender.sent_at):
                if (sender.index, seq) not in seen and seq not in sender.unsure:
                    if receiver.was_online(sent_at):
                        lost += 1
                    else:
                        missed_offline += 1
    sent = sum(len(c.sent_at) - len(c.unsure) for c in clients)
    heard_by_any = {key for c in clients for key in c.heard}
    outages = [
        later[0] - earlier[1]
        for c in clients
        for earlier, later in zip(c.intervals, c.intervals[1:], strict=False)
    ]
    return {
        "clients": len(clients),
        "sent": sent,
        "deliveries": sum(len(c.log) for c in clients),
        "sent_during": sum(window[0] <= t <= window[1] for c in clients for t in c.sent_at),
        "disconnects": sum(c.drops for c in clients),
        "clients_dropped": sum(c.drops > 0 for c in clients),
        "failed_connects": sum(c.failed_connects for c in clients),
        "longest_outage_s": max(outages, default=0.0),
        "lost": lost,
        "lost_by_all": sum(
            (c.index, seq) not in heard_by_any
            for c in clients
            for seq in range(len(c.sent_at))
            if seq not in c.unsure
        ),
        "send_failures": sum(len(c.unsure) for c in clients),
        "missed_offline": missed_offline,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "p50_ms": _percentile(outside, 0.50),
        "p99_ms": _percentile(outside, 0.99),
        "p99_during_ms": _percentile(inside, 0.99),
    }
