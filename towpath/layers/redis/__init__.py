"""Redis channel layers: ``RedisChannelLayer`` (queues; single, sharded, Sentinel)."""

from towpath.layers.redis.core import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
