"""Settings for the notifications example: the Redis layer at ``REDIS_URL`` (default the local
Redis) and its routes. The publish script reads them too."""

import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")]},
        "ROUTING": "examples.notifications.routing:routes",
    },
}
