"""Closing a layer's per-loop state when its event loop closes.

Sync code that calls a layer through ``asgiref.sync.async_to_sync`` (every Django view that
does ``async_to_sync(channel_layer.group_send)(...)``) runs each call in a new event loop and
closes it afterwards. A layer keeps connections per loop, so without a hook each such call
would leave its connections open for good. channels_redis wraps ``loop.close`` once per layer
instance, nesting one wrapper inside the next: thousands of instances recurse. Here a loop is
wrapped once, whatever the number of layers, and the wrapper closes every layer still holding
state for that loop.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

__all__ = ["Closable", "close_with_loop"]

logger = logging.getLogger("towpath.layers")


class Closable(Protocol):
    async def close(self) -> None: ...


_LAYERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Any]] = (
    weakref.WeakKeyDictionary()
)


async def _close_all(layers: list[Any]) -> list[Any]:
    return await asyncio.gather(*(layer.close() for layer in layers), return_exceptions=True)


def close_with_loop(loop: asyncio.AbstractEventLoop, layer: Closable) -> None:
    """Run ``layer.close()`` in ``loop`` just before ``loop.close()``. A loop without instance
    attributes (uvloop) cannot be hooked: close such layers yourself."""
    layers = _LAYERS.get(loop)
    if layers is None:
        try:
            attributes = vars(loop)
        except TypeError:
            return
        layers = _LAYERS[loop] = weakref.WeakSet()
        original = loop.close

        def close() -> None:
            attributes["close"] = original
            pending = list(_LAYERS.pop(loop, ()))
            if pending and not loop.is_running() and not loop.is_closed():
                try:
                    for result in loop.run_until_complete(_close_all(pending)):
                        if isinstance(result, BaseException):
                            logger.error("closing a channel layer with its loop failed: %r", result)
                except Exception:
                    logger.exception("closing channel layers with their event loop failed")
            original()

        attributes["close"] = close
    layers.add(layer)
