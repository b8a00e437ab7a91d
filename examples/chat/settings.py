"""Settings for running the chat decoupled: the Redis layer at ``REDIS_URL`` (default the local
Redis) and the chat's routes. ``runserver`` needs none of this (it uses the in-memory layer)."""

import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")]},
        "ROUTING": "examples.chat.routing:routes",
    },
}
