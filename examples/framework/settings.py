"""Settings for the decoupled run of the FastAPI example: one Redis layer that the interface
server (`towpath serve --settings`) and the workers (`towpath runworker --asgi`) share.

`REDIS_URL` picks the Redis server (default: a local one on the standard port). No `ROUTING`:
the workers get the app with `--asgi examples.framework.app:app`.
"""

import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]},
    },
}
