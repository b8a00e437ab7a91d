"""Channel layers: the contract, the backends and the registry.

``from towpath.layers import InMemoryChannelLayer, get_channel_layer, register_channel_layer``.
The other backends live in their own modules (``towpath.layers.ipc``,
``towpath.layers.redis``, ``towpath.layers.rabbitmq``) and are imported only when used.
"""

from towpath.layers.base import (
    BaseChannelLayer,
    ChannelFull,
    ChannelLayerError,
    ChannelLayerNotRegistered,
    InvalidChannelLayerError,
    LayerConnectionError,
    MessageTooLarge,
)
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import (
    DEFAULT_CHANNEL_LAYER,
    get_channel_layer,
    has_layers,
    register_channel_layer,
    registered_aliases,
    unregister_channel_layer,
)

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelLayerError",
    "ChannelLayerNotRegistered",
    "InMemoryChannelLayer",
    "InvalidChannelLayerError",
    "LayerConnectionError",
    "MessageTooLarge",
    "get_channel_layer",
    "has_layers",
    "register_channel_layer",
    "registered_aliases",
    "unregister_channel_layer",
]
