"""Channel layers by alias, as fast-channels and Django Channels users know them.

Layers are registered explicitly (``register_channel_layer``) or built from a settings mapping
(``configure``, which ``towpath.config`` feeds from ``--settings`` / ``TOWPATH_SETTINGS``).
Unlike fast-channels, ``get_channel_layer`` of an unknown alias raises
``ChannelLayerNotRegistered`` naming the aliases that are registered, rather than returning
``None`` for the caller to trip over later.
"""

from __future__ import annotations

from towpath.layers.base import BaseChannelLayer, ChannelLayerNotRegistered

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "get_channel_layer",
    "has_layers",
    "register_channel_layer",
    "registered_aliases",
    "unregister_channel_layer",
]

DEFAULT_CHANNEL_LAYER = "default"

_layers: dict[str, BaseChannelLayer] = {}


def register_channel_layer(alias: str, layer: BaseChannelLayer) -> None:
    """Register ``layer`` under ``alias``, replacing any layer registered there before."""
    if not isinstance(alias, str) or not alias:
        raise TypeError(f"Channel layer alias must be a non-empty str, not {alias!r}")
    _layers[alias] = layer


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer:
    """The layer registered under ``alias``. Raises ``ChannelLayerNotRegistered``."""
    try:
        return _layers[alias]
    except KeyError:
        known = ", ".join(sorted(_layers)) or "none"
        raise ChannelLayerNotRegistered(
            f"Channel layer {alias!r} is not registered; registered: {known}. Register it "
            "with register_channel_layer() or add it to CHANNEL_LAYERS in your settings."
        ) from None


def unregister_channel_layer(alias: str) -> BaseChannelLayer | None:
    """Remove and return the layer under ``alias`` (``None`` if there was none). The layer is
    not closed: the caller that made it decides when."""
    return _layers.pop(alias, None)


def has_layers() -> bool:
    """True when at least one layer is registered."""
    return bool(_layers)


def registered_aliases() -> list[str]:
    """The registered aliases, sorted."""
    return sorted(_layers)
