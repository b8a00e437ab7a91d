"""``channels_redis.core`` -> towpath's queue layer and its ``ChannelFull``.

towpath's ``ChannelFull`` also subclasses ``channels.exceptions.ChannelFull`` (what the real
``channels_redis.core.ChannelFull`` is) when Channels is installed, so code catching either works.
"""

from towpath.layers import ChannelFull
from towpath.layers.redis import RedisChannelLayer

__all__ = ["ChannelFull", "RedisChannelLayer"]
