"""Settings for the jobs example: the Redis layer at ``REDIS_URL`` (default the local Redis)
and its routes (the page, the WebSocket and the ``thumbnail`` channel)."""

import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")]},
        "ROUTING": "examples.jobs.routing:routes",
    },
}
