"""The Redis layer's readers: one per process inbox (the ``!`` channels of one event loop) and
one fetcher per set of normal channels a receive waits on, per shard.

They move entries from Redis into the local mailbox and never die of what they read: an entry
whose framing is wrong (no 13-digit expiry; for an inbox, no channel list of this inbox and
space after it) is dropped, counted in ``stats.undecodable`` and logged once per reader per
burst (``towpath/layers/_readers.py``); the entries around it are delivered. A ``!`` channel an
inbox entry names still leaves its backlog in Redis when the entry is dropped, as when it
expires, so capacity stays exact. One that dies anyway (a bug) is logged and started again,
with back-off, and receivers waiting on it are served by the new one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

from towpath.layers._mailbox import Mailbox
from towpath.layers._readers import EXPIRY_DIGITS, ReaderGuard, inbox_channels, parse_expiry
from towpath.layers.base import LayerConnectionError, LayerStats, non_local_name
from towpath.layers.kernel import OutageRetry
from towpath.layers.redis.connection import CONNECTION_ERRORS, BlockingReader, Shard
from towpath.layers.redis.hosts import shard_for
from towpath.layers.redis.scripts import POP
from towpath.layers.redis.state import Fetcher, LoopState

__all__ = ["READ_ERRORS", "Readers"]

READ_ERRORS = (*CONNECTION_ERRORS, LayerConnectionError)

#: a fetcher's key: (shard index, the normal channels it fetches)
FetchKey = tuple[int, tuple[str, ...]]


class Readers:
    """Mixed into ``RedisChannelLayer``, which provides the attributes and methods declared
    here."""

    ring_size: int
    expiry: float
    block_seconds: int
    receive_batch: int
    prefetch: int
    stats: LayerStats
    _guard: ReaderGuard

    def _key(self, name: str) -> str:  # pragma: no cover - the layer's own method is used
        raise NotImplementedError

    def _shard_of(self, state: LoopState, name: str) -> Shard:  # pragma: no cover
        raise NotImplementedError

    def _release(self, state: LoopState, channel: str, count: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _claim_inbox(self, inbox: str, channel: str) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- starting (and restarting) readers -----------------------------------------------------

    def _ensure_readers(self, state: LoopState, names: tuple[str, ...]) -> None:
        normal: dict[int, list[str]] = {}
        for name in names:
            if "!" in name:
                inbox = non_local_name(name)
                reader = state.readers.get(inbox)
                if reader is None or reader.done():
                    self._claim_inbox(inbox, name)
                    self._start_reader(state, inbox)
            else:
                normal.setdefault(shard_for(name, self.ring_size), []).append(name)
        for index, channels in normal.items():
            key = (index, tuple(channels))
            fetcher = state.fetchers.get(key)
            if fetcher is None or fetcher.task.done():
                fetcher = self._start_fetcher(state, key, self.prefetch if len(normal) == 1 else 0)
            fetcher.wanted.set()

    def _start_reader(self, state: LoopState, inbox: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._read_inbox(state, inbox), name=f"towpath-redis-inbox-{inbox}"
        )
        state.readers[inbox] = task
        restart = functools.partial(self._restart_reader, state, inbox, task)
        self._guard.supervise(task, f"Redis reader of {self._key(inbox)!r}", restart)

    def _restart_reader(self, state: LoopState, inbox: str, dead: asyncio.Task[None]) -> bool:
        if state.closing or state.readers.get(inbox) is not dead:
            return False  # closed, or a receive started a new one meanwhile
        self._start_reader(state, inbox)
        return True

    def _start_fetcher(self, state: LoopState, key: FetchKey, prefetch: int) -> Fetcher:
        task = asyncio.get_running_loop().create_task(
            self._fetch(state, key), name=f"towpath-redis-fetch-{key[0]}"
        )
        fetcher = state.fetchers[key] = Fetcher(task, prefetch)
        restart = functools.partial(self._restart_fetcher, state, key, fetcher)
        lists = ", ".join(repr(self._key(channel)) for channel in key[1])
        self._guard.supervise(task, f"Redis fetcher of {lists}", restart)
        return fetcher

    def _restart_fetcher(self, state: LoopState, key: FetchKey, dead: Fetcher) -> bool:
        """A fetcher died: its receivers still wait (in the mailbox), so a new one fetches
        for them, unless the layer is closing or a receive started one meanwhile."""
        if state.closing or dead.stopping or key in state.fetchers:
            return False
        self._start_fetcher(state, key, dead.prefetch).wanted.set()
        return True

    # -- the inbox reader ----------------------------------------------------------------------

    async def _read_inbox(self, state: LoopState, inbox: str) -> None:
        """Move everything sent to this process's ``!`` channels into the local mailbox."""
        shard = self._shard_of(state, inbox)
        key = self._key(inbox)
        reader = BlockingReader(shard, self.block_seconds)
        state.blocking.add(reader)
        retry = OutageRetry(shard.outage)
        collected = False
        try:
            while not state.closing:
                try:
                    reply = await self._pop(state, shard, (key,), self.receive_batch)
                    if reply:
                        self._dispatch_inbox(state, inbox, reply[1::2])
                        continue
                    popped = await reader.blpop((key,))
                    if popped is not None:
                        self._dispatch_inbox(state, inbox, (popped[1],))
                    else:
                        self._sweep(state)
                    retry.reset()
                except READ_ERRORS as exc:
                    if state.closing:
                        return
                    await self._back_off(state, retry, f"reader for {inbox}", exc)
        except GeneratorExit:
            # collected with its event loop (the layer was never closed): nothing can be
            # awaited any more; the connection is dropped without a goodbye
            collected = True
            reader.abort()
            raise
        finally:
            state.blocking.discard(reader)
            if not collected:
                await reader.close()

    def _dispatch_inbox(self, state: LoopState, inbox: str, entries: Iterable[bytes]) -> None:
        """Fan inbox entries out to the mailbox. They stay in their channels' backlog in Redis
        until a receive takes them (or they expire, or they are dropped as undecodable)."""
        if state.flushing:
            return
        now = time.time()
        put = state.mailbox.put
        bad, first, why = 0, b"", ""
        for entry in entries:
            expires_at = parse_expiry(entry)
            space = entry.find(b" ", EXPIRY_DIGITS)
            channels: list[str]
            if space < 0:
                channels, foreign = [], True
            else:
                channels, foreign = inbox_channels(entry[EXPIRY_DIGITS:space], inbox)
            if expires_at is None or foreign or not channels:
                if not bad:
                    first = entry
                    why = (
                        "no 13-digit expiry at its head"
                        if expires_at is None
                        else f"no list of channels of {inbox!r} and a space after its expiry"
                    )
                bad += 1
                for channel in channels:
                    self._release(state, channel, 1)  # its backlog counted it, maybe
                continue
            if expires_at <= now:
                self.stats.expired += len(channels)
                for channel in channels:
                    self._release(state, channel, 1)
                continue
            data = entry[space + 1 :]
            for channel in channels:
                put(channel, expires_at, data)
        if bad:
            self._guard.dropped(f"Redis list {self._key(inbox)!r}", why, first, bad)
        self._sweep(state, now)

    def _sweep(self, state: LoopState, now: float | None = None) -> None:
        """Once per ``expiry``: drop what expired unread in the mailbox."""
        if now is None:
            now = time.time()
        if now >= state.next_sweep:
            state.next_sweep = now + self.expiry
            state.mailbox.sweep(now)

    # -- fetchers of normal channels -----------------------------------------------------------

    async def _fetch(self, state: LoopState, key: FetchKey) -> None:
        """Fetch the normal channels ``key[1]`` from shard ``key[0]`` while receivers wait on
        them; idle for ``4 * block_seconds`` without demand, the fetcher ends."""
        index, channels = key
        shard = state.shards[index]
        fetcher = state.fetchers[key]
        keys = [self._key(channel) for channel in channels]
        by_key = {k.encode(): channel for k, channel in zip(keys, channels, strict=True)}
        reader = fetcher.reader = BlockingReader(shard, self.block_seconds)
        state.blocking.add(reader)
        mailbox = state.mailbox
        turn = itertools.count()
        retry = OutageRetry(shard.outage)
        collected = False
        try:
            while not state.closing and not fetcher.stopping:
                demand = self._demand(mailbox, channels)
                if demand <= 0:
                    fetcher.wanted.clear()
                    try:
                        async with asyncio.timeout(4 * self.block_seconds):
                            await fetcher.wanted.wait()
                    except TimeoutError:
                        return
                    continue
                start = next(turn) % len(keys)
                order = keys[start:] + keys[:start]
                try:
                    wanted = min(max(demand, fetcher.prefetch), self.receive_batch)
                    reply = await self._pop(state, shard, order, wanted)
                    if not reply:
                        popped = await reader.blpop(order)
                        reply = list(popped) if popped is not None else []
                    retry.reset()
                except READ_ERRORS as exc:
                    if state.closing:
                        return
                    await self._back_off(state, retry, f"fetch from {shard.label}", exc)
                    continue
                if not state.flushing:
                    self._deliver(state, by_key, reply)
        except GeneratorExit:
            collected = True
            reader.abort()  # collected with its event loop, as in _read_inbox
            raise
        finally:
            if state.fetchers.get(key) is fetcher:
                del state.fetchers[key]
            state.blocking.discard(reader)
            if not collected:
                await reader.close()

    def _deliver(self, state: LoopState, by_key: dict[bytes, str], reply: Sequence[Any]) -> None:
        """A fetcher's ``[key, entry, key, entry, ...]`` into the mailbox; an entry without a
        13-digit expiry at its head is dropped (one report per list of the reply)."""
        now = time.time()
        put = state.mailbox.put
        bad: dict[bytes, tuple[int, bytes]] = {}
        for position in range(0, len(reply), 2):
            list_key, entry = reply[position], reply[position + 1]
            expires_at = parse_expiry(entry)
            if expires_at is None:
                count, first = bad.get(list_key, (0, entry))
                bad[list_key] = (count + 1, first)
            elif expires_at <= now:
                self.stats.expired += 1
            else:
                put(by_key[list_key], expires_at, entry[EXPIRY_DIGITS:])
        for list_key, (count, first) in bad.items():
            self._guard.dropped(
                f"Redis list {list_key.decode()!r}", "no 13-digit expiry at its head", first, count
            )

    @staticmethod
    async def _pop(state: LoopState, shard: Shard, keys: Sequence[str], count: int) -> Any:
        """A reader's or fetcher's POP of up to ``count`` entries, listed in ``state.pops``
        while in flight (see :meth:`_let_go`)."""
        future = shard.evalsha(POP, keys, (count,))
        state.pops[future] = (shard, asyncio.current_task())
        try:
            return await future
        finally:
            del state.pops[future]

    @staticmethod
    async def _back_off(
        state: LoopState, retry: OutageRetry, what: str, exc: BaseException
    ) -> None:
        task = asyncio.current_task()
        state.backing_off.add(task)
        try:
            await retry.wait(what, exc)
        finally:
            state.backing_off.discard(task)

    @staticmethod
    def _let_go(state: LoopState, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Stop at once those of the readers and fetchers ``tasks`` that have nothing in
        flight: a POP not written yet (its server unreachable) is withdrawn, which cancels it
        and ends the task; a pause after a failure is cancelled. A written POP and a BLPOP are
        left to finish (``CLIENT UNBLOCK``, or a broken connection, ends a BLPOP)."""
        stopping = set(tasks)
        for future, (shard, task) in list(state.pops.items()):
            if task in stopping:
                shard.withdraw(future)
        for task in state.backing_off & stopping:
            if task is not None:
                task.cancel()

    @staticmethod
    def _demand(mailbox: Mailbox[bytes], channels: tuple[str, ...]) -> int:
        """Receivers waiting on ``channels`` beyond what the mailbox already holds for them. A
        receiver just woken by another fetcher still counts: it is one of this set's receivers,
        and fetching for it too keeps a multi-shard ``receive_many`` fair."""
        waiters: set[asyncio.Future[None]] = set()
        buffered = 0
        for channel in channels:
            waiting = mailbox.waiters.get(channel)
            if waiting:
                waiters.update(waiting)
            buffered += mailbox.length(channel)
        return len(waiters) - buffered
