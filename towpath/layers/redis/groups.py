"""The Redis layer's groups: ``group_add``, ``group_discard`` and ``group_send``.

A group is a sorted set ``P:group:<group>`` of member channels scored by the time they joined
(``scripts.py``). ``group_send`` delivers in one round trip on a single server (GROUP_SEND reads
the members and delivers to them in one script) and in one round trip for the members plus one
per shard holding members when sharded (DELIVER), with members of one process bundled into one
inbox entry. Both scripts name the members they found full, and only those; the layer then
waits for them (``towpath/layers/_group_wait.py``): each retry checks the membership and
pushes in one script (SEND_MEMBER) when the member's channel lives on the group's shard (always,
on a single server or through Sentinel), else asks the group's shard (ZSCORE) and then sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from towpath.layers._group_wait import GroupWaits, MemberLeft, Retry
from towpath.layers.base import (
    ChannelFull,
    LayerStats,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.redis.connection import Shard
from towpath.layers.redis.scripts import DELIVER, GROUP_SEND, SEND, SEND_MEMBER
from towpath.layers.redis.state import LoopState, log_failure
from towpath.layers.serializers import Serializer

__all__ = ["Groups"]

logger = logging.getLogger("towpath.layers.redis")


class Groups:
    """Mixed into ``RedisChannelLayer``, which provides the attributes and methods declared
    here."""

    prefix: str
    group_expiry: float
    capacity: int
    channel_capacity: list[Any]
    inbox_capacity: int
    stats: LayerStats
    _serializer: Serializer
    _ttl_ms: int
    _group_ttl_ms: int
    _group_waits: GroupWaits
    # group_send's members as read from Redis -> (channel, shard, list key, DELIVER token)
    _member_routes: dict[bytes, tuple[str, int, str, str]]
    get_capacity: Callable[[str], int]  # BaseChannelLayer's, after this class in the MRO

    def _state(self) -> LoopState:  # pragma: no cover - the layer's own method is used
        raise NotImplementedError

    def _key(self, name: str) -> str:  # pragma: no cover
        raise NotImplementedError

    def _shard_of(self, state: LoopState, name: str) -> Shard:  # pragma: no cover
        raise NotImplementedError

    def _route(self, state: LoopState, channel: str) -> tuple[Shard, str, str, str]:
        raise NotImplementedError  # pragma: no cover

    def _header(self) -> tuple[bytes, int]:  # pragma: no cover
        raise NotImplementedError

    def _release_now(self, state: LoopState) -> list[asyncio.Future[Any]]:  # pragma: no cover
        raise NotImplementedError

    def _send_args(
        self, state: LoopState, channel: str, data: bytes
    ) -> tuple[Shard, tuple[str, str], tuple[Any, ...]]:  # pragma: no cover
        raise NotImplementedError

    def _group_key(self, group: str) -> str:
        return self._key(f"group:{group}")

    def _member_route(self, state: LoopState, member: bytes) -> tuple[str, int, str, str]:
        """(channel, shard, list key, ``name=capacity`` for a ``!`` channel else "")."""
        channel = member.decode()
        shard, key, _, name = self._route(state, channel)
        if len(self._member_routes) >= 65536:
            self._member_routes.clear()
        token = f"{name}={self.get_capacity(channel)}" if name else ""
        route = self._member_routes[member] = (channel, shard.index, key, token)
        return route

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        shard = self._shard_of(self._state(), group)
        key = self._group_key(group)
        added = shard.submit("ZADD", key, time.time(), channel)
        await shard.execute("PEXPIRE", key, self._group_ttl_ms)
        await added

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        await self._shard_of(self._state(), group).execute("ZREM", self._group_key(group), channel)
        self._group_waits.left(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        require_valid_group_name(group)
        data = self._serializer.serialize(validate_message(message))
        state = self._state()
        waits = self._group_waits
        began = waits.clock()
        if state.released:
            self._release_now(state)
        shard, key = self._shard_of(state, group), self._group_key(group)
        oldest = time.time() - self.group_expiry
        if len(state.shards) == 1:
            full, members = await self._group_send_atomic(shard, key, data, oldest)
        else:
            full, members = await self._group_send_sharded(state, shard, key, data, oldest)
        if full or group in waits.stalled:
            retry = self._member_retry(state, group, data)
            await waits.settle(group, message, full, members, began, retry, self.stats, logger)

    async def _group_send_atomic(
        self, shard: Shard, key: str, data: bytes, oldest: float
    ) -> tuple[list[str], int]:
        """One server: read the members and deliver in one script (GROUP_SEND). Returns the
        members found full, and how many members there were."""
        header, now_ms = self._header()
        args: list[Any] = [
            data,
            header,
            self._ttl_ms,
            now_ms,
            repr(oldest),
            self.prefix,
            self.inbox_capacity,
            self.capacity,
        ]
        if self.channel_capacity:  # per-channel capacities: the members are read first
            for member in await shard.execute("ZRANGE", key, 0, -1):
                channel = member.decode()
                capacity = self.get_capacity(channel)
                if capacity != self.capacity:
                    args += (channel, capacity)
        members, *full = await shard.evalsha(GROUP_SEND, (key,), args)
        return _full_members(full), members

    async def _group_send_sharded(
        self, state: LoopState, shard: Shard, key: str, data: bytes, oldest: float
    ) -> tuple[list[str], int]:
        """Several shards: the members' channels may live on other shards than the group, so
        the members are read first and each shard gets one DELIVER. Plain commands in one
        round trip: a script would copy the members into a Lua table and back."""
        shard.submit("ZREMRANGEBYSCORE", key, "-inf", f"({oldest!r}").add_done_callback(log_failure)
        members = await shard.execute("ZRANGE", key, 0, -1)
        if not members:
            return [], 0
        header, now_ms = self._header()
        # destination list -> (shard, members as "name=capacity" for an inbox, list capacity).
        # Members of this very process go through Redis too: one script per shard delivers to
        # every member, so on one shard every member sees the group's messages in the same
        # order -- what a WebSocket handback's cut relies on (towpath/consumers/handback.py).
        destinations: dict[str, tuple[int, list[str], int]] = {}
        routes = self._member_routes
        for member in members:
            route = routes.get(member)
            if route is None:
                route = self._member_route(state, member)
            channel, index, list_key, token = route
            destination = destinations.get(list_key)
            if destination is None:
                capacity = self.inbox_capacity if token else self.get_capacity(channel)
                destination = destinations[list_key] = (index, [], capacity)
            if token:
                destination[1].append(token)
        per_shard: dict[int, tuple[list[str], list[Any]]] = {}
        for list_key, (index, names, capacity) in destinations.items():
            keys, args = per_shard.setdefault(index, ([], [data, header, self._ttl_ms, now_ms]))
            keys.append(list_key)
            args += (",".join(names), capacity)
        calls = [
            state.shards[index].evalsha(DELIVER, keys, args)
            for index, (keys, args) in per_shard.items()
        ]
        full = [name for names in await asyncio.gather(*calls) for name in names]
        return _full_members(full), len(members)

    def _member_retry(self, state: LoopState, group: str, data: bytes) -> Retry:
        """group_send's delivery of ``data`` to one member found full: SEND_MEMBER where the
        member lives on the group's shard, else ZSCORE on the group's shard, then SEND."""
        group_shard, group_key = self._shard_of(state, group), self._group_key(group)

        async def retry(channel: str, message: Message) -> None:
            shard, keys, args = self._send_args(state, channel, data)
            oldest = time.time() - self.group_expiry
            if shard is group_shard:
                script_args = (channel, repr(oldest), *args)
                sent = await shard.evalsha(SEND_MEMBER, (group_key, *keys), script_args)
            else:
                score = await group_shard.execute("ZSCORE", group_key, channel)
                member = score is not None and float(score) >= oldest
                sent = await shard.evalsha(SEND, keys, args) if member else -1
            if sent < 0:
                raise MemberLeft(channel)
            if not sent:
                raise ChannelFull(channel)

        return retry


def _full_members(names: Sequence[bytes]) -> list[str]:
    """The members a delivery script named full: a ``!`` channel by its name, a normal one by
    its list's key ``prefix:channel`` (neither a prefix nor a channel holds a ``:``)."""
    return [name.decode().rpartition(":")[2] for name in names]
