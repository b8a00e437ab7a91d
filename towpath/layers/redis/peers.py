"""What channels_redis's (and fast-channels') ``RedisChannelLayer`` has beyond the layer
contract, for code written against it: ``create_pool``, ``connection``, ``consistent_hash``,
``serialize``/``deserialize`` and ``wait_received``.

Each keeps the meaning it has there, on towpath's storage: ``consistent_hash`` is towpath's
shard choice (not channels_redis's CRC32 ring, so the numbers differ), ``serialize`` gives the
bytes this layer would store (no random prefix). docs/migrating.md lists every item of the
peers' API and what towpath does with it; ``tests/layers/test_dropin_api.py`` checks the list.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis

from towpath.layers.base import Message
from towpath.layers.redis.hosts import HostConfig, create_pool, shard_for
from towpath.layers.serializers import Serializer

__all__ = ["ChannelsRedisMethods"]


class ChannelsRedisMethods:
    """Mixed into ``RedisChannelLayer``, which provides ``hosts``, ``ring_size``,
    ``_serializer`` and the per-loop ``_state()`` (its ``shards``)."""

    hosts: list[HostConfig]
    ring_size: int
    _serializer: Serializer

    def _state(self) -> Any:  # pragma: no cover - the layer's own method is used
        raise NotImplementedError

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.ring_size:
            raise ValueError(
                f"There are only {self.ring_size} hosts - you asked for {index!r}"
                f" (shard indexes run from 0 to {self.ring_size - 1})"
            )

    def create_pool(self, index: int) -> ConnectionPool:
        """A new redis-py pool for the shard ``hosts[index]``: every connection the layer makes
        to that shard comes from it. Override it in a subclass to customise connections (TLS
        context, credential provider, ...), as channels_redis allows. The layer's reads never
        time out on ``socket_timeout`` (blocking reads wait as long as they must; a hung reply
        is caught by ``command_timeout``)."""
        self._check_index(index)
        return create_pool(self.hosts[index], socket_timeout=None, socket_connect_timeout=5)

    def connection(self, index: int) -> Redis:
        """A redis-py client for shard ``index`` in the running event loop, on the layer's own
        pool: its connections are closed by the layer's ``close()``. For your own commands
        (a health check, inspecting keys); the layer does not use it."""
        self._check_index(index)
        return Redis(connection_pool=self._state().shards[index].pool)

    def consistent_hash(self, value: str | bytes) -> int:
        """The shard index ``value`` (a channel or group name) lives on. A ``!`` channel lives
        on the shard of its ``prefix!`` part: pass ``non_local_name(channel)``."""
        name = value.decode() if isinstance(value, bytes) else value
        return shard_for(name, self.ring_size)

    def serialize(self, message: Message) -> bytes:
        """``message`` as the bytes this layer stores (after ``serializer_format`` and
        ``symmetric_encryption_keys``)."""
        return self._serializer.serialize(message)

    def deserialize(self, message: bytes) -> Message:
        """The inverse of :meth:`serialize`."""
        return self._serializer.deserialize(message)

    async def wait_received(self) -> None:
        """channels_redis waits here for the background tasks its cancelled receives leave;
        towpath's receives leave none, so this returns at once."""
