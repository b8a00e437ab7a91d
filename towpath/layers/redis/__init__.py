"""Redis channel layers: ``RedisChannelLayer`` (queues; single, sharded, Sentinel) and
``RedisPubSubChannelLayer`` (fire-and-forget on Redis pub/sub)."""

from towpath.layers.redis.core import RedisChannelLayer
from towpath.layers.redis.pubsub import RedisPubSubChannelLayer

__all__ = ["RedisChannelLayer", "RedisPubSubChannelLayer"]
