"""``channels_redis.pubsub`` -> towpath's Pub/Sub layer."""

from towpath.layers.redis import RedisPubSubChannelLayer

__all__ = ["RedisPubSubChannelLayer"]
