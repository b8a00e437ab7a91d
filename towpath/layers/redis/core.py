"""``RedisChannelLayer``: the production channel layer, a drop-in for channels_redis.

Where the speed comes from (see ``scripts.py`` for the storage layout):

* one round trip per send (a Lua script checks capacity, pushes and refreshes the TTL), and
  sends issued in the same event-loop tick share it (``connection.Shard`` pipelines them);
* one reader per process for all its ``!`` channels, popping up to ``receive_batch`` entries a
  round trip and handing them to waiting receivers;
* one round trip for a group's members plus one per shard holding members for a
  ``group_send``, however many members, with members of one process bundled into one write.

Receives are cancel-safe: readers run as tasks of their own and put what they fetch into a
local mailbox, and a receive only ever takes a message from there, with no ``await`` between
taking and returning it. Normal channels are fetched only as far as receivers are waiting;
what a cancelled receive leaves fetched is handed to the next receive, or pushed back to the
head of its list by ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from towpath.layers._group_wait import DEFAULT_GROUP_SEND_TIMEOUT, GroupWaits
from towpath.layers._mailbox import Mailbox
from towpath.layers._readers import ReaderGuard
from towpath.layers.base import (
    ChannelCapacity,
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    LayerOptions,
    Message,
    non_local_name,
    require_valid_channel_name,
    validate_message,
)
from towpath.layers.kernel import LoopStates, MailboxReceiving, OutageLog, ServerReachability
from towpath.layers.redis.connection import Shard
from towpath.layers.redis.groups import Groups
from towpath.layers.redis.hosts import decode_hosts, describe, shard_for
from towpath.layers.redis.peers import ChannelsRedisMethods
from towpath.layers.redis.reading import READ_ERRORS, Readers
from towpath.layers.redis.scripts import PUSH_BACK, RELEASE, SEND
from towpath.layers.redis.state import LoopState, log_failure, outage_logs
from towpath.layers.serializers import build_serializer

__all__ = ["RedisChannelLayer"]

logger = logging.getLogger("towpath.layers.redis")


class RedisChannelLayer(
    ServerReachability, Groups, Readers, ChannelsRedisMethods, MailboxReceiving[LoopState, bytes]
):
    """Channel layer on one or more Redis servers (≥ 5): single, sharded or via Sentinel.

    Same ``CONFIG`` names and defaults as channels_redis (``hosts``, ``prefix``, ``expiry``,
    ``group_expiry``, ``capacity``, ``channel_capacity``, ``symmetric_encryption_keys``,
    ``serializer_format``; ``random_prefix_length`` is accepted and unused), plus fast-channels'
    Sentinel keywords (``sentinels``, ``service_name``, ``sentinel_kwargs``,
    ``connection_kwargs``) and towpath's own tuning knobs:

    * ``retry_timeout`` (10 s): how long a command waits for an unreachable Redis before it
      raises ``LayerConnectionError``;
    * ``command_timeout`` (10 s): how long a written command may wait for its reply;
    * ``block_seconds`` (5): the BLPOP timeout of the readers (they loop; idle is fine);
    * ``receive_batch`` (500): entries a reader takes per round trip;
    * ``inbox_capacity`` (``INBOX_CAPACITY_FACTOR`` = 10,000 times ``capacity``, a guard):
      entries a process's inbox may hold unread (a
      process that stopped reading); each ``!`` channel still has its own ``capacity``;
    * ``prefetch`` (16): messages of normal channels a receiving process may take beyond the
      receivers waiting right now, so a busy worker does not pay a round trip per message;
      ``close()`` puts what it did not use back at the head of the channel;
    * ``group_send_timeout`` (5 s): how long a ``group_send`` waits for a full member before
      it skips it (``towpath/layers/_group_wait.py``); 0 skips at once, as channels_redis does.
    """

    concurrent_sends = True  # send_many: every send at once, sharing round trips

    def __init__(
        self,
        hosts: object = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        random_prefix_length: int = 12,
        serializer_format: str = "msgpack",
        *,
        sentinels: Sequence[Any] | None = None,
        service_name: str | None = None,
        sentinel_kwargs: Mapping[str, Any] | None = None,
        connection_kwargs: Mapping[str, Any] | None = None,
        retry_timeout: float = 10.0,
        command_timeout: float = 10.0,
        block_seconds: int = 5,
        receive_batch: int = 500,
        inbox_capacity: int | None = None,
        prefetch: int = 16,
        group_send_timeout: float = DEFAULT_GROUP_SEND_TIMEOUT,
    ) -> None:
        super().__init__(LayerOptions.pick(locals()))
        if not isinstance(prefix, str) or not prefix or ":" in prefix:
            raise InvalidChannelLayerError(
                f"prefix must be a non-empty str without ':', not {prefix!r}"
            )
        if (
            isinstance(block_seconds, bool)
            or not isinstance(block_seconds, int)
            or block_seconds < 1
        ):
            raise InvalidChannelLayerError(
                f"block_seconds must be a whole number of seconds ≥ 1, not {block_seconds!r}"
            )
        if not isinstance(receive_batch, int) or receive_batch < 1:
            raise InvalidChannelLayerError(f"receive_batch must be ≥ 1, not {receive_batch!r}")
        self.prefix = prefix
        self.hosts = decode_hosts(
            hosts,
            sentinels=sentinels,
            service_name=service_name,
            sentinel_kwargs=sentinel_kwargs,
            connection_kwargs=connection_kwargs,
        )
        self.ring_size = len(self.hosts)
        self.retry_timeout = retry_timeout
        self.command_timeout = command_timeout
        self.block_seconds = block_seconds
        self.receive_batch = receive_batch
        self.inbox_capacity = self.options.inbox_limit
        if type(prefetch) is not int or prefetch < 0:
            raise InvalidChannelLayerError(f"prefetch must be an int ≥ 0, not {prefetch!r}")
        self.prefetch = prefetch
        self._group_waits = GroupWaits(group_send_timeout, memory=self.group_expiry)
        self._serializer = build_serializer(
            self.options.serializer_format, self.options.symmetric_encryption_keys
        )
        self._guard = ReaderGuard(self.stats, logger)
        self._ttl_ms = max(1, int(self.expiry * 1000))
        self._group_ttl_ms = max(1, int(self.group_expiry * 1000))
        self._routes: dict[str, tuple[int, str, str, str]] = {}
        # group_send's members as read from Redis -> (channel, shard, list key, DELIVER token)
        self._member_routes: dict[bytes, tuple[str, int, str, str]] = {}
        self._loop_serial = itertools.count()
        self._states: LoopStates[LoopState] = LoopStates(self, self._new_state)
        # inbox -> the event loop whose reader reads it (see _claim_inbox)
        self._inbox_loops: dict[str, weakref.ref[asyncio.AbstractEventLoop]] = {}

    # -- per-loop state ------------------------------------------------------------------------

    def _new_state(self, loop: asyncio.AbstractEventLoop) -> LoopState:
        shards = [
            Shard(
                index,
                self.create_pool(index),
                describe(host),
                retry_timeout=self.retry_timeout,
                command_timeout=self.command_timeout,
            )
            for index, host in enumerate(self.hosts)
        ]
        serial = next(self._loop_serial)
        state = LoopState(shards, Mailbox(time.time), f"-{serial}" if serial else "")
        state.mailbox.on_expired = lambda channel, count: self._expired(state, channel, count)
        state.next_sweep = time.time() + self.expiry
        return state

    def _state(self) -> LoopState:
        return self._states.current()

    def _outage_logs(self) -> list[OutageLog]:
        return outage_logs(self._states.values())

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _shard_of(self, state: LoopState, name: str) -> Shard:
        return state.shards[shard_for(name, self.ring_size)]

    def _route(self, state: LoopState, channel: str) -> tuple[Shard, str, str, str]:
        """Where ``channel`` lives: shard, list key, backlog-hash key (the list key again for a
        normal channel), and the name to record in an inbox entry ("" for a normal channel)."""
        route = self._routes.get(channel)
        if route is None:
            if len(self._routes) >= 65536:
                self._routes.clear()
            if "!" in channel:
                inbox = non_local_name(channel)
                key = self._key(inbox)
                route = self._routes[channel] = (
                    shard_for(inbox, self.ring_size),
                    key,
                    f"{key}:backlog",
                    channel,
                )
            else:
                key = self._key(channel)
                route = self._routes[channel] = (shard_for(channel, self.ring_size), key, key, "")
        index, key, counts, name = route
        return state.shards[index], key, counts, name

    # -- sending -------------------------------------------------------------------------------

    def _header(self) -> tuple[bytes, int]:
        now = time.time()
        return b"%013d" % int((now + self.expiry) * 1000), int(now * 1000)

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        data = self._serializer.serialize(validate_message(message))
        shard, keys, args = self._send_args(self._state(), channel, data)
        if not await shard.evalsha(SEND, keys, args):
            self.stats.full += 1
            raise ChannelFull(channel)

    def _send_args(
        self, state: LoopState, channel: str, data: bytes
    ) -> tuple[Shard, tuple[str, str], tuple[Any, ...]]:
        """The shard, keys and arguments of the SEND of ``data`` to ``channel``."""
        shard, key, backlog, name = self._route(state, channel)
        header, now_ms = self._header()
        if name:
            if channel in state.released:  # received here just now: no longer counted
                self._release_now(state)
            entry = header + name.encode() + b" " + data
            capacity = self.get_capacity(channel)
            return (
                shard,
                (key, backlog),
                (entry, self.inbox_capacity, self._ttl_ms, now_ms, name, capacity),
            )
        args = (header + data, self.get_capacity(channel), self._ttl_ms, now_ms, "", 0)
        return shard, (key, backlog), args

    # -- receiving -----------------------------------------------------------------------------

    def _wanted(self, state: LoopState, names: tuple[str, ...]) -> None:
        self._ensure_readers(state, names)

    def _taken(self, state: LoopState, channel: str, data: bytes) -> Message | None:
        """A message just taken from the mailbox, decoded (None: undecodable, dropped); a
        ``!`` channel's backlog in Redis goes down by one."""
        if "!" in channel:
            self._release(state, channel, 1)
        try:
            return self._serializer.deserialize(data)
        except Exception as exc:
            self._guard.dropped(f"Redis list {self._route(state, channel)[1]!r}", exc, data)
            return None

    async def stop_receiving(self, channels: Iterable[str]) -> None:
        """End the fetchers of the normal ``channels`` (a blocked BLPOP is ended with ``CLIENT
        UNBLOCK``, which loses nothing, unlike dropping its connection) and push what they
        fetched and nobody received back to the head of each list."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            return
        wanted = {channel for channel in channels if "!" not in channel}
        fetchers = [f for key, f in state.fetchers.items() if wanted.intersection(key[1])]
        for fetcher in fetchers:
            fetcher.stopping = True
            fetcher.wanted.set()
        tasks = {fetcher.task for fetcher in fetchers}
        deadline = loop.time() + self.block_seconds + self.command_timeout
        while tasks and loop.time() < deadline:
            self._let_go(state, tasks)
            for fetcher in fetchers:
                reader = fetcher.reader
                if reader is not None and reader.client_id is not None and not fetcher.task.done():
                    with contextlib.suppress(*READ_ERRORS):
                        await reader.shard.execute("CLIENT", "UNBLOCK", reader.client_id)
            _, tasks = await asyncio.wait(tasks, timeout=0.05)
        for channel in wanted:
            await self._push_back(state, channel, state.mailbox.take(channel))

    async def _push_back(
        self, state: LoopState, channel: str, entries: Iterable[tuple[float, bytes]]
    ) -> None:
        """Messages fetched for ``channel`` and received by nobody: back to the head of its
        list (a ``!`` channel's: its inbox, each entry naming it), in their order, for other
        processes or event loops. A ``!`` channel's backlog still counts them."""
        shard, key, _, name = self._route(state, channel)
        stamp = name.encode() + b" " if name else b""
        back = [b"%013d" % int(expires_at * 1000) + stamp + data for expires_at, data in entries]
        if back:
            with contextlib.suppress(*READ_ERRORS):
                await shard.evalsha(PUSH_BACK, (key,), (*back, self._ttl_ms))

    # -- capacity of ! channels ----------------------------------------------------------------

    def _expired(self, state: LoopState, channel: str, count: int) -> None:
        self.stats.expired += count
        if "!" in channel:
            self._release(state, channel, count)

    def _release(self, state: LoopState, channel: str, count: int) -> None:
        """``count`` messages of the ``!`` channel ``channel`` left this process's backlog
        (received, or dropped unread): lower its count in Redis at the end of this tick, with
        every other such change of the tick in one RELEASE per inbox."""
        released = state.released
        released[channel] = released.get(channel, 0) + count
        if not state.release_scheduled and not state.closing:
            state.release_scheduled = True
            asyncio.get_running_loop().call_soon(self._release_now, state)

    def _release_now(self, state: LoopState) -> list[asyncio.Future[Any]]:
        """Send the pending RELEASEs now. A send to a channel with a pending release, and a
        group_send, call this first, so that a message received just before is no longer
        counted when their script checks capacity (one shard's commands run in the order they
        were queued)."""
        state.release_scheduled = False
        released, state.released = state.released, {}
        by_inbox: dict[str, tuple[Shard, list[Any]]] = {}
        for channel, count in released.items():
            shard, _, backlog, _ = self._route(state, channel)
            by_inbox.setdefault(backlog, (shard, []))[1].extend((channel, count))
        futures = []
        for backlog, (shard, args) in by_inbox.items():
            future = shard.evalsha(RELEASE, (backlog,), args)
            future.add_done_callback(log_failure)
            futures.append(future)
        return futures

    def _claim_inbox(self, inbox: str, channel: str) -> None:
        """This event loop starts reading ``inbox``. Refused while another event loop's reader
        reads it: each would take messages the other's receivers wait for."""
        loop = asyncio.get_running_loop()
        held = self._inbox_loops.get(inbox)
        other = held() if held is not None else None
        if other is not None and other is not loop and not other.is_closed():
            state = self._states.get(other)
            reader = state.readers.get(inbox) if state is not None and not state.closing else None
            if reader is not None and not reader.done():
                raise ChannelLayerError(
                    f"cannot receive on {channel!r} in this event loop: another event loop "
                    f"(thread) of this layer instance reads the '!' channels of {inbox!r}; "
                    "receive a '!' channel in the event loop whose new_channel() made it, or "
                    "call close_pools() in that loop first"
                )
        self._inbox_loops[inbox] = weakref.ref(loop)

    # -- names and groups ----------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new ``!`` channel of this process. Its inbox reader starts now, so that what other
        processes send is drained into this process (and counted against capacity) promptly."""
        state = self._state()
        name = f"{prefix}.{self.client_prefix}{state.tag}!{os.urandom(8).hex()}"
        require_valid_channel_name(name)
        self._ensure_readers(state, (name,))
        return name

    # -- housekeeping --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under ``prefix`` on every shard (SCAN, never KEYS), and drop what
        this process had fetched (what its readers fetch while it runs too: a POP queued
        before the UNLINK ran before it)."""
        state = self._state()
        state.flushing += 1
        try:
            pattern = _glob_escape(self.prefix) + ":*"
            for shard in state.shards:
                cursor: int | bytes = 0
                while True:
                    cursor, keys = await shard.execute(
                        "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
                    )
                    if keys:
                        await shard.execute("UNLINK", *keys)
                    if int(cursor) == 0:
                        break
        finally:
            state.flushing -= 1
            state.mailbox.clear()
            state.released.clear()
            self._group_waits.clear()

    async def close(self) -> None:
        """Stop this loop's readers, push what they fetched and no receive took back to the
        head of its list (a normal channel's, or the inbox of a ``!`` channel, for whichever
        event loop receives it next), and close the connections. The layer stays usable: a
        later call opens new ones."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop)
        if state is None:
            return
        # Stop the readers by breaking their connections rather than by cancelling them deep
        # inside redis-py; cancel only what did not stop by itself.
        state.closing = True
        for shard in state.shards:
            shard.give_up()  # a reader waiting on an unreachable server stops now
        tasks = [*state.readers.values(), *(f.task for f in state.fetchers.values())]
        for fetcher in state.fetchers.values():
            fetcher.wanted.set()
        for reader in state.blocking:
            reader.abort()
        if tasks:
            self._let_go(state, tasks)
            _, pending = await asyncio.wait(tasks, timeout=self.command_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.command_timeout)
        for inbox in state.readers:
            held = self._inbox_loops.get(inbox)
            if held is not None and held() is loop:
                del self._inbox_loops[inbox]
        released = self._release_now(state)
        if released:
            await asyncio.wait(released, timeout=self.command_timeout)
        await asyncio.gather(
            *(
                self._push_back(state, channel, entries)
                for channel, entries in state.mailbox.clear().items()
            )
        )
        for shard in state.shards:
            await shard.close()

    async def close_pools(self) -> None:
        """channels_redis's call, for code written for it: ``close()`` for this event loop
        (nothing fetched is lost: it goes back to Redis), and forget what event loops closed
        without closing the layer left behind. The layer stays usable from any event loop."""
        await self.close()
        self._states.forget_closed()

    def __repr__(self) -> str:
        hosts = ", ".join(describe(host) for host in self.hosts)
        return (
            f"<RedisChannelLayer hosts=[{hosts}] prefix={self.prefix!r} capacity={self.capacity}>"
        )


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
