"""The channel layer every example's settings use: Redis when ``REDIS_URL`` is set (several
machines, or a Redis you already run), else the IPC layer: the processes of one machine talk
through shared files under ``/dev/shm``, no server to start (``docs/ipc.md``). Its prefix is
``TOWPATH_IPC_PREFIX`` or the example's name, so two examples never see each other."""

from __future__ import annotations

import os
from typing import Any


def channel_layer(name: str, routing: str | None = None) -> dict[str, Any]:
    """A ``CHANNEL_LAYERS`` entry for the example ``name`` (with its ``ROUTING``)."""
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        layer: dict[str, Any] = {
            "BACKEND": "towpath.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    else:
        layer = {
            "BACKEND": "towpath.layers.ipc.IPCChannelLayer",
            "CONFIG": {"prefix": os.environ.get("TOWPATH_IPC_PREFIX") or name},
        }
    if routing is not None:
        layer["ROUTING"] = routing
    return layer
