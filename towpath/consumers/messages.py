"""Helpers for message consumers: plain ``async def consumer(message, **kwargs)`` functions.

A message carries a ``reply_channel``; answering is sending ASGI send events there::

    async def hello(message, name):
        await reply(message, 200, f"Hello, {name}".encode(), content_type="text/plain")

    async def echo(message):                      # on websocket.receive
        await reply_events(message, {"type": "websocket.send", "text": message.get("text")})

The layer is, in order: the ``layer=`` argument, the one a worker set in ``current_layer``
for the consumers it runs, and the layer registered as ``"default"``. Served in-process by a
``Router`` (no worker), the reply channel is local and writes straight to the connection.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from towpath.layers.base import BaseChannelLayer, ChannelFull, ChannelLayerNotRegistered
from towpath.layers.registry import DEFAULT_CHANNEL_LAYER, get_channel_layer

__all__ = ["current_layer", "local_reply_channel", "reply", "reply_events"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = Mapping[str | bytes, str | bytes] | Sequence[tuple[str | bytes, str | bytes]]

#: The layer the running worker uses; a worker sets it so helpers need no ``layer=``.
current_layer: ContextVar[BaseChannelLayer | None] = ContextVar(
    "towpath_current_layer", default=None
)

_local_senders: dict[str, Send] = {}


@contextmanager
def local_reply_channel(send: Send) -> Iterator[str]:
    """A reply-channel name whose events go straight to ``send`` (in-process serving).
    Valid as a channel name, but only this process's helpers know it: a group broadcast
    through the layer does not reach it."""
    name = f"local.{os.urandom(6).hex()}!{os.urandom(8).hex()}"
    _local_senders[name] = send
    try:
        yield name
    finally:
        del _local_senders[name]


def _layer(layer: BaseChannelLayer | None) -> BaseChannelLayer:
    if layer is not None:
        return layer
    layer = current_layer.get()
    if layer is not None:
        return layer
    try:
        return get_channel_layer(DEFAULT_CHANNEL_LAYER)
    except ChannelLayerNotRegistered as exc:
        raise ChannelLayerNotRegistered(
            f"Replying needs a channel layer to reach the message's reply_channel: {exc} "
            "Or pass layer= to reply()/reply_events()."
        ) from None


def _reply_channel(message: Mapping[str, Any]) -> str:
    reply_channel = message.get("reply_channel") if isinstance(message, Mapping) else None
    if not isinstance(reply_channel, str):
        raise TypeError(
            f"Cannot reply to a message without a str 'reply_channel': {message!r:.200}; "
            "only messages from an interface server (http.*, websocket.*) carry one"
        )
    return reply_channel


async def reply_events(
    message: Mapping[str, Any], *events: dict[str, Any], layer: BaseChannelLayer | None = None
) -> None:
    """Send ASGI send ``events``, in order, to ``message["reply_channel"]``. Several events go
    out together (one round trip on Redis). Raises ``ChannelFull`` if the reply channel was."""
    reply_channel = _reply_channel(message)
    local = _local_senders.get(reply_channel)
    if local is not None:
        for event in events:
            await local(event)
        return
    target = _layer(layer)
    if len(events) == 1:
        await target.send(reply_channel, events[0])
    elif events and await target.send_many([(reply_channel, event) for event in events]):
        raise ChannelFull(reply_channel)


def _encode(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise TypeError(f"Header {what} must be str or bytes, not {value!r}")


def _headers(headers: Headers | None) -> list[list[bytes]]:
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [[_encode(name, "name").lower(), _encode(value, "value")] for name, value in pairs]


async def reply(
    message: Mapping[str, Any],
    status: int = 200,
    body: bytes | str = b"",
    headers: Headers | None = None,
    *,
    content_type: str | None = None,
    layer: BaseChannelLayer | None = None,
) -> None:
    """Answer an ``http.request`` message with a complete response: ``status``, ``headers``
    (a dict or pairs, str or bytes), ``body`` (str is sent UTF-8). ``content_type`` adds that
    header; ``content-length`` is added unless given."""
    if isinstance(body, str):
        body = body.encode()
        content_type = content_type or "text/plain; charset=utf-8"
    elif not isinstance(body, bytes):
        raise TypeError(f"reply() body must be bytes or str, not {type(body).__name__}")
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"reply() status must be an int, not {status!r}")
    pairs = _headers(headers)
    names = {name for name, _ in pairs}
    if content_type is not None and b"content-type" not in names:
        pairs.append([b"content-type", content_type.encode("latin-1")])
    if b"content-length" not in names:
        pairs.append([b"content-length", str(len(body)).encode()])
    await reply_events(
        message,
        {"type": "http.response.start", "status": status, "headers": pairs},
        {"type": "http.response.body", "body": body, "more_body": False},
        layer=layer,
    )
