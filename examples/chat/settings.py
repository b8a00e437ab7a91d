# The chat decoupled over Redis (README.md, tour step 2): towpath serve and towpath runworker
# with --settings examples/chat/settings.py, run from the repository root. REDIS_URL names the
# Redis; without it, the one on this machine's default port.
import os

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]},
        "ROUTING": "examples.chat.routing:routes",
    },
}
