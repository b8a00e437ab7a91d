"""Settings for the WSGI example: one Redis layer shared by `towpath serve --settings` and the
workers, and the routing that sends HTTP to Flask and WebSockets to the chat consumer.

`REDIS_URL` picks the Redis server (default: a local one on the standard port).
"""

import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]},
        "ROUTING": "examples.wsgi.routing:routes",
    },
}
