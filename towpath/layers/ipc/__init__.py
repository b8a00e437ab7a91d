"""The IPC channel layer: the processes of one machine talk through tmpfs files, no server.

``IPCChannelLayer(prefix="towpath")`` needs no argument: every process that builds it with the
same ``prefix`` (and ``directory``) shares its channels and groups. See ``docs/ipc.md``.
"""

from towpath.layers.ipc.check import check_store, describe_store
from towpath.layers.ipc.core import IPCChannelLayer, IPCLayerStats
from towpath.layers.ipc.queues import StoreFull
from towpath.layers.ipc.store import default_directory

__all__ = [
    "IPCChannelLayer",
    "IPCLayerStats",
    "StoreFull",
    "check_store",
    "default_directory",
    "describe_store",
]
