"""``AsyncConsumer``: an ASGI 3 application that dispatches events to methods by type.

The same class as Channels 4's and fast-channels' ``AsyncConsumer``: ``as_asgi()`` makes one
instance per connection; a message of type ``chat.message`` calls ``chat_message(message)``;
with a channel layer the instance gets ``channel_layer`` and its own ``channel_name`` and
receives from it alongside the ASGI ``receive``, so ``group_send`` events reach it.

Differences, for speed and clearer failures: the first event is dispatched in the calling task
(a one-message HTTP request never starts another task); after it, one task per source feeds
``dispatch`` under a lock, instead of a new task per message. When the ``channel_layer_alias``
is not registered the consumer runs without a layer and ``channel_layer`` is a stand-in that
is false and whose every use raises ``ChannelLayerNotRegistered`` saying how to configure one.
An instance that ends other than through its ``websocket.disconnect`` handler (a handler
raised, a send found the connection gone, it was cancelled, a handler raised ``StopConsumer``)
leaves its ``groups`` before it ends: its memberships never stay behind it for
``group_expiry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from towpath.consumers.handback import Handback
from towpath.layers.base import BaseChannelLayer, ChannelLayerNotRegistered
from towpath.layers.registry import DEFAULT_CHANNEL_LAYER, get_channel_layer

__all__ = [
    "AcceptConnection",
    "AsyncConsumer",
    "DenyConnection",
    "StopConsumer",
    "dispatch_one",
    "failed_message_type",
    "get_handler_name",
]

logger = logging.getLogger("towpath.consumers")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


#: the attribute :meth:`AsyncConsumer.dispatch` sets on an exception a handler raised: the
#: type of the message it was handling (read with :func:`failed_message_type`)
_FAILED_ON = "towpath_message_type"


def failed_message_type(exc: BaseException | None) -> str | None:
    """The type of the message a consumer's handler was handling when it raised ``exc``
    (``websocket.receive``, ``chat.message``, ...), or None when no handler raised it."""
    kind = getattr(exc, _FAILED_ON, None)
    return kind if isinstance(kind, str) else None


class StopConsumer(Exception):
    """Raised by a handler to end this consumer instance cleanly."""


class AcceptConnection(Exception):
    """Raised in ``connect()`` to accept the WebSocket."""


class DenyConnection(Exception):
    """Raised in ``connect()`` to reject the WebSocket (HTTP 403)."""


def get_handler_name(message: dict[str, Any]) -> str:
    """``chat.message`` -> ``chat_message``. Raises ``ValueError`` for a message without a
    ``type`` or one that would name a private method."""
    message_type = message.get("type") if isinstance(message, dict) else None
    if not isinstance(message_type, str):
        raise ValueError(f"Incoming message has no str 'type': {message!r:.200}")
    name = message_type.replace(".", "_")
    if name.startswith("_"):
        raise ValueError(f"Malformed message type {message_type!r} (leading underscore)")
    return name


class _NoChannelLayer:
    """Stands in for a layer that is not configured: false, and every use explains."""

    __slots__ = ("alias",)

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        raise ChannelLayerNotRegistered(
            f"This consumer uses channel layer {self.alias!r} (channel_layer_alias), which is "
            "not configured. Register one before serving, e.g. "
            f"register_channel_layer({self.alias!r}, InMemoryChannelLayer()) from "
            f"towpath.layers, or add a {self.alias!r} entry to CHANNEL_LAYERS in the settings "
            "module given to --settings (TOWPATH_SETTINGS)."
        )

    def __repr__(self) -> str:
        return f"<no channel layer {self.alias!r}>"


def _lookup_layer(alias: str | None) -> BaseChannelLayer | None:
    if alias is None:
        return None
    try:
        return get_channel_layer(alias)
    except ChannelLayerNotRegistered:
        return None


class AsyncConsumer:
    """Base consumer: type -> method dispatch, the channel layer and ``channel_name``."""

    #: the layer alias (``None``: run without a layer, as fast-channels' default)
    channel_layer_alias: str | None = DEFAULT_CHANNEL_LAYER
    #: set when this instance ends because its worker stopped and handed the connection to
    #: another worker (the client stays connected): ``disconnect()`` can tell it from a close
    handed_back: bool = False
    #: set once the instance left its ``groups`` (``websocket_disconnect`` does, or the end of
    #: an instance that did not get there)
    groups_left: bool = False

    scope: Scope
    channel_layer: BaseChannelLayer
    channel_name: str
    base_send: Send

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key, value in kwargs.items():  # as_asgi(**initkwargs), as Django's as_view()
            setattr(self, key, value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "url_route" not in scope and "path_params" in scope:
            # mounted in Starlette/FastAPI: their path parameters are Channels' url_route
            scope = {**scope, "url_route": {"args": (), "kwargs": dict(scope["path_params"])}}
        self.scope = scope
        self.base_send = send
        layer = _lookup_layer(self.channel_layer_alias)
        if layer is not None:
            self.channel_layer = layer
            self.channel_name = await layer.new_channel()
        else:
            self.channel_layer = cast(
                BaseChannelLayer, _NoChannelLayer(self.channel_layer_alias or "default")
            )
        # offered before the connect, so that the accept names this instance's channel
        handback = Handback.offered(scope, layer, self.channel_name) if layer is not None else None
        try:
            await self.dispatch(await receive())
            if layer is None:
                while True:
                    await self.dispatch(await receive())
            else:
                channel: Receive = functools.partial(layer.receive, self.channel_name)
                if handback is not None:  # towpath runworker: docs/affinity.md
                    await handback.take_place(getattr(self, "groups", None))
                    await handback.cut_over()
                    receive = handback.client_source(receive, self._handed_back)
                    channel = handback.channel_source(channel)
                await self._dispatch_many(receive, channel)
        except StopConsumer:
            pass
        except BaseException:
            if layer is not None:
                await self._leave_groups(layer)
            raise
        if layer is not None:
            await self._leave_groups(layer)

    async def _leave_groups(self, layer: BaseChannelLayer) -> None:
        """The instance ends, and not through a handler that left its groups already
        (``websocket_disconnect``): leave every group in ``groups`` (one it was not in is
        ignored), so that no ``group_send`` goes on delivering to a channel nobody reads. A
        layer that fails here is logged; the memberships then expire with ``group_expiry``."""
        groups = getattr(self, "groups", None)
        if self.groups_left or not groups or not isinstance(groups, list | tuple | set):
            return
        self.groups_left = True
        channel = self.channel_name
        results = await asyncio.gather(
            *(layer.group_discard(group, channel) for group in groups), return_exceptions=True
        )
        failed = [result for result in results if isinstance(result, Exception)]
        if failed:
            logger.warning(
                "%s (channel %s) could not leave its groups as it ended: %r",
                type(self).__name__,
                channel,
                failed[0],
            )

    def _handed_back(self) -> None:
        self.handed_back = True

    async def _dispatch_many(self, *sources: Receive) -> None:
        """Dispatch what every source yields, one message at a time, until a handler raises
        (``StopConsumer`` included). One task per source for the instance's life."""
        lock = asyncio.Lock()
        stopped = False

        async def pump(source: Receive) -> None:
            nonlocal stopped
            while True:
                message = await source()
                async with lock:
                    if stopped:  # another source's handler ended the instance meanwhile
                        return
                    try:
                        await self.dispatch(message)
                    except BaseException:
                        stopped = True
                        raise

        tasks = [asyncio.ensure_future(pump(source)) for source in sources]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what the handler raised, with the handler's frames
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                if task.done():
                    # raised above already (awaiting it again would raise it anew with this
                    # frame as its whole traceback, hiding the handler that raised), or lost
                    # to the first failure: retrieved either way
                    if not task.cancelled():
                        task.exception()
                    continue
                with contextlib.suppress(asyncio.CancelledError, StopConsumer):
                    await task

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler named by the message's type; ``ValueError`` if there is none. An
        exception the handler raises leaves with the message's type on it
        (:func:`failed_message_type`) and a note naming it, for whoever logs it."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(
                f"{type(self).__name__} has no handler for message type {message['type']!r}; "
                f"define async def {get_handler_name(message)}(self, message)"
            )
        try:
            await handler(message)
        except Exception as exc:
            if not isinstance(exc, StopConsumer) and failed_message_type(exc) is None:
                # the innermost dispatch names the message (a subclass's dispatch that calls
                # this one sees the exception again)
                kind = message["type"]
                with contextlib.suppress(AttributeError):  # an exception class with __slots__
                    setattr(exc, _FAILED_ON, kind)
                    name = type(self).__qualname__
                    exc.add_note(f"(raised by {name} handling a {kind!r} message)")
            raise

    async def send(self, message: dict[str, Any]) -> None:
        """Send an ASGI event to the client (overridable)."""
        await self.base_send(message)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ConsumerApp:
        """An ASGI 3 app making one instance per connection with ``cls(**initkwargs)``."""
        return ConsumerApp(cls, initkwargs)


class ConsumerApp:
    """What ``Consumer.as_asgi()`` returns: an ASGI 3 app that makes one consumer instance per
    connection. An object rather than a function, so that Starlette's ``WebSocketRoute`` and
    ``Route`` (which wrap plain functions as request handlers) mount it as the ASGI app it is."""

    __slots__ = ("consumer_class", "consumer_initkwargs")

    def __init__(self, consumer_class: type[AsyncConsumer], initkwargs: dict[str, Any]) -> None:
        self.consumer_class = consumer_class
        self.consumer_initkwargs = initkwargs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.consumer_class(**self.consumer_initkwargs)(scope, receive, send)

    def __repr__(self) -> str:
        return f"{self.consumer_class.__qualname__}.as_asgi()"


async def _no_send(message: dict[str, Any]) -> None:
    raise RuntimeError(
        f"A consumer handling a plain channel message has no client to send {message!r:.80} to;"
        " send to a channel or group through self.channel_layer"
    )


async def dispatch_one(consumer: AsyncConsumer, scope: Scope, message: dict[str, Any]) -> None:
    """Run one message through ``consumer.dispatch`` (a consumer class routed on a plain
    channel, like Channels 4's background ``ChannelNameRouter`` consumers)."""
    consumer.scope = scope
    consumer.base_send = _no_send
    layer = _lookup_layer(consumer.channel_layer_alias)
    if layer is not None:
        consumer.channel_layer = layer
    else:
        consumer.channel_layer = cast(
            BaseChannelLayer, _NoChannelLayer(consumer.channel_layer_alias or "default")
        )
    with contextlib.suppress(StopConsumer):
        await consumer.dispatch(message)
