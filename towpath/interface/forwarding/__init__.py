"""The forwarding application: decoupled mode's ASGI 3 app, turning connections into messages.

``towpath serve --settings S`` runs this app instead of the user's. Each HTTP request and each
WebSocket gets a reply channel (``layer.new_channel("interface")``: no I/O, every reply channel of
the process shares one reader); the client's events go out as channel messages
(``http.request``, ``websocket.connect``/``receive``/``disconnect``) and every message that
arrives on the reply channel, whoever sent it, is an ASGI send event written to the client.
``docs/protocol.md`` is the full wire protocol; :mod:`towpath.wire` its names and shapes in
code; this module is its server half.
This package composes: its parts never import it back.

* ``settings``: :class:`ForwardingSettings`, the app's options, frozen and checked once;
* ``stats``: :class:`ForwardingStats`, what it did;
* ``affinity``: :class:`Affinity`, the control channel, heartbeats and the gone-worker sweep;
* ``context``: :class:`ExchangeContext`, what an exchange may use of the app (given to it
  explicitly: no exchange sees the app);
* ``outcome``: :class:`Outcome`, how an exchange's reply loop ended;
* ``exchange`` (what both exchanges share: the reply loop), ``http_exchange`` and
  ``websocket_exchange``.

One connection costs the task the server runs the app in plus one more: the app's own task waits
on the reply channel and writes replies out; a second task reads the client (request body,
WebSocket frames, the disconnect) and sends those on. When the second one must stop the first
(the client left, a limit was hit), it moves the first one's ``asyncio.timeout`` deadline to
now: one wake-up path, no extra futures or queues.

Daphne's failure answers are kept: ``ChannelFull`` on a request gets 503, no response start
within ``http_timeout_seconds`` gets 503 (never once a response or a WebSocket has started), a
full ``websocket.connect`` is denied 503, a full ``websocket.receive`` closes the socket 1013.

The reply loop must not be held up by its client: the server writes this app's WebSocket
output without waiting for the client to read it (``bounded_websocket_output``), and closes
1013 a client whose unread output would pass ``ws_output_limit_bytes``
(``towpath.interface.slow_clients``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from towpath.config import build_layer, import_from_string, load_settings
from towpath.interface.delivery import DEFAULT_PROTOCOL_SEND_TIMEOUT, ProtocolSends
from towpath.interface.forwarding.affinity import Affinity
from towpath.interface.forwarding.context import ExchangeContext
from towpath.interface.forwarding.exchange import Receive, Send
from towpath.interface.forwarding.http_exchange import _HTTPExchange
from towpath.interface.forwarding.outcome import Outcome
from towpath.interface.forwarding.settings import ForwardingSettings
from towpath.interface.forwarding.stats import ForwardingStats
from towpath.interface.forwarding.websocket_exchange import HELD_FRAMES_MAX, _WebSocketExchange
from towpath.interface.slow_clients import SlowClients
from towpath.interface.untaken import UntakenRequests
from towpath.layers.base import BaseChannelLayer, InvalidChannelLayerError
from towpath.layers.memory import InMemoryChannelLayer
from towpath.wire import scope_to_wire, wire_extensions

__all__ = [
    "HELD_FRAMES_MAX",
    "Affinity",
    "ExchangeContext",
    "ForwardingApp",
    "ForwardingSettings",
    "ForwardingStats",
    "Outcome",
    "forwarding_app_from_settings",
]

logger = logging.getLogger("towpath.interface.forwarding")


class ForwardingApp:
    """An ASGI 3 application that forwards every connection to a channel layer.

    ``http_timeout_seconds``: how long a request (or a WebSocket handshake) waits for the start
    of its answer before the server answers 503 itself (``None``: forever). Bodies are sent in
    chunks of at most ``body_chunk_bytes``; a body over ``max_body_bytes`` (``None``: no limit)
    is answered 413. ``stats`` counts what happened. A worker not heard from (heartbeats on
    the control channel) for ``heartbeat_timeout_seconds`` is gone: its requests are answered
    503 and its WebSockets re-dispatched (``.affinity``). A request no worker
    took within ``untaken_warning_seconds`` (``None``: ``heartbeat_timeout_seconds``) is
    logged: no worker running, or workers busy (``towpath.interface.untaken``; ``clock``:
    seconds, for tests; ``worker_command``: how the warning tells to start a worker). A
    protocol message (a disconnect notice, a resumed connect, a handback end, a heartbeat ack)
    that finds its channel full is retried with back-off for up to
    ``protocol_send_timeout_seconds`` (``towpath.interface.delivery``).
    """

    #: the server writes this app's WebSocket output without waiting for the client, bounded
    #: by ``ws_output_limit_bytes`` per connection (``towpath.interface.server.Server``): a
    #: reply loop held up by one client would fill its reply channel and stall its worker
    bounded_websocket_output = True

    def __init__(
        self,
        layer: BaseChannelLayer,
        *,
        http_timeout_seconds: float | None = 120.0,
        body_chunk_bytes: int = 256 * 1024,
        max_body_bytes: int | None = None,
        heartbeat_timeout_seconds: float = 5.0,
        untaken_warning_seconds: float | None = None,
        clock: Callable[[], float] | None = None,
        worker_command: str = "`towpath runworker` with the same settings",
        protocol_send_timeout_seconds: float = DEFAULT_PROTOCOL_SEND_TIMEOUT,
        settings: ForwardingSettings | None = None,
    ) -> None:
        for name in ("send", "receive", "new_channel"):
            if not callable(getattr(layer, name, None)):
                raise InvalidChannelLayerError(
                    f"{layer!r:.80} is not a channel layer: it has no {name}()"
                )
        given = ForwardingSettings(
            http_timeout_seconds=http_timeout_seconds,
            body_chunk_bytes=body_chunk_bytes,
            max_body_bytes=max_body_bytes,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            untaken_warning_seconds=untaken_warning_seconds,
            worker_command=worker_command,
            protocol_send_timeout_seconds=protocol_send_timeout_seconds,
        )
        if settings is not None and given != ForwardingSettings():
            raise TypeError("give ForwardingApp settings= or the separate settings, not both")
        self.settings = settings = given if settings is None else settings
        self.layer = layer
        self.stats = stats = ForwardingStats()
        self.protocol = ProtocolSends(stats, settings.protocol_send_timeout_seconds)
        self.slow_clients = SlowClients(stats)
        self.affinity = Affinity(
            layer, stats, settings.heartbeat_timeout_seconds, protocol=self.protocol
        )
        self.untaken = UntakenRequests(
            stats, settings.untaken_warning, clock=clock, fix=f"start {settings.worker_command}"
        )
        #: what every exchange is given of this app
        self._context = ExchangeContext(
            layer=layer,
            settings=settings,
            stats=stats,
            affinity=self.affinity,
            protocol=self.protocol,
            slow_clients=self.slow_clients,
            untaken=self.untaken,
            scope_to_wire=self.scope_to_wire,
            control_channel=self.control_channel,
            layer_failed=self.layer_failed,
            layer_works=self.layer_works,
        )
        # The HTTP scope's extensions dict is the server's shared one: convert it once.
        self._extensions_seen: Any = None
        self._extensions_wire: dict[str, Any] = {}
        #: the control channel being made (one attempt at a time)
        self._starting: asyncio.Task[str] | None = None
        #: a layer failure was logged, and nothing went through since
        self._layer_down = False

    @property
    def http_timeout_seconds(self) -> float | None:
        return self.settings.http_timeout_seconds

    @property
    def body_chunk_bytes(self) -> int:
        return self.settings.body_chunk_bytes

    @property
    def max_body_bytes(self) -> int | None:
        return self.settings.max_body_bytes

    def __repr__(self) -> str:
        return f"<ForwardingApp layer={self.layer!r}>"

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _HTTPExchange(self._context, scope, receive, send).run()
        elif kind == "websocket":
            await _WebSocketExchange(self._context, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"ForwardingApp cannot serve a {kind!r} scope")

    def scope_to_wire(self, scope: MutableMapping[str, Any]) -> dict[str, Any]:
        """The scope as it travels (:func:`towpath.wire.scope_to_wire`). The server's HTTP
        scopes share one ``extensions`` dict: its wire form is worked out once."""
        extensions = scope.get("extensions")
        if extensions is not self._extensions_seen:
            self._extensions_seen = extensions
            self._extensions_wire = wire_extensions(extensions)
        return scope_to_wire(scope, self._extensions_wire)

    async def control_channel(self) -> str:
        """The control channel (``Affinity.start``), made on first use by one attempt at a
        time that every caller shares; raises the layer's error when it could not be made
        (the RabbitMQ layer dials for it: the next caller tries again)."""
        channel = self.affinity.control_channel
        if channel is not None:
            return channel
        starting = self._starting
        if starting is None or starting.done():
            starting = self._starting = asyncio.get_running_loop().create_task(
                self.affinity.start()
            )
            starting.add_done_callback(self._started)
        return await asyncio.shield(starting)

    def _started(self, task: asyncio.Task[str]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.layer_failed("Could not make the control channel", task.exception())

    def layer_failed(self, what: str, exc: BaseException | None) -> None:
        """Log a failure of the channel layer: a warning for the first of an outage, debug
        lines for the rest (the layer logs its own unreachable server once, with its
        address); :meth:`layer_works` ends the outage."""
        if self._layer_down:
            logger.debug("%s: %r", what, exc)
            return
        self._layer_down = True
        logger.warning(
            "%s: %r; requests are answered 503 while the channel layer fails (further failures "
            "are logged at debug level until it works again)",
            what,
            exc,
        )

    def layer_works(self) -> None:
        """A request went through the channel layer (ends an outage :meth:`layer_failed`
        reported)."""
        if self._layer_down:
            self._layer_down = False
            logger.info("the channel layer takes requests again")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Startup does not wait for the layer (the server starts, and answers 503, while
        the layer's server is down): it starts making the control channel; shutdown closes
        the layer."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._starting = asyncio.get_running_loop().create_task(self.affinity.start())
                self._starting.add_done_callback(self._started)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.untaken.close()
                starting = self._starting
                if starting is not None and not starting.done():
                    starting.cancel()
                    await asyncio.wait((starting,))
                await self.affinity.stop()
                try:
                    await self.layer.close()
                except Exception as exc:
                    logger.warning("Closing the channel layer failed: %r", exc)
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def forwarding_app_from_settings(
    settings: str | None,
    layer_alias: str = "default",
    *,
    allow_in_memory: bool = False,
    forwarding: ForwardingSettings | None = None,
    **kwargs: Any,
) -> ForwardingApp:
    """Build the forwarding app for ``towpath serve --settings``.

    ``settings`` is a settings module (dotted name or ``.py`` path; its ``CHANNEL_LAYERS``
    entry ``layer_alias`` is built), or ``module:attr`` naming a channel layer object; ``None``
    reads ``TOWPATH_SETTINGS``, and without it uses the embedded IPC layer. The in-memory
    layer is refused unless ``allow_in_memory``: workers in other processes would never see a
    message. ``forwarding`` (a :class:`ForwardingSettings`) or ``kwargs`` go to
    :class:`ForwardingApp`; either way the warning about untaken requests names the
    ``towpath runworker`` command line that matches. Raises ``InvalidChannelLayerError`` (or
    ``ImportError``) naming what is wrong.
    """
    layer: Any
    layer_option = "" if layer_alias == "default" else f" --layer {layer_alias}"
    if settings is None:
        kwargs.setdefault("worker_command", f"`towpath runworker{layer_option}`")
    elif ":" not in settings or settings.endswith(".py"):
        kwargs.setdefault(
            "worker_command", f"`towpath runworker --settings {settings}{layer_option}`"
        )
    if settings is not None and ":" in settings and not settings.endswith(".py"):
        layer = import_from_string(settings)
        if isinstance(layer, type):
            raise InvalidChannelLayerError(
                f"{settings!r} names the class {layer.__name__}, not a channel layer instance; "
                "name an instance, or a settings module with CHANNEL_LAYERS"
            )
        for name in ("send", "receive", "new_channel"):
            if not callable(getattr(layer, name, None)):
                raise InvalidChannelLayerError(
                    f"{settings!r} is {layer!r:.60}, not a channel layer (it has no {name}()); "
                    "name a layer instance, or a settings module with CHANNEL_LAYERS"
                )
    else:
        layer = build_layer(load_settings(settings, embedded=True).layer(layer_alias))
    if isinstance(layer, InMemoryChannelLayer) and not allow_in_memory:
        raise InvalidChannelLayerError(
            f"Channel layer {layer_alias!r} is an InMemoryChannelLayer: messages never leave "
            "this process, so no worker would see a request. Use a layer that crosses "
            "processes (towpath.layers.redis.RedisChannelLayer), or run everything in one "
            "process with `towpath runserver`."
        )
    if forwarding is not None:
        default = ForwardingSettings().worker_command
        if forwarding.worker_command == default and "worker_command" in kwargs:
            forwarding = forwarding.replace(worker_command=kwargs.pop("worker_command"))
        return ForwardingApp(layer, settings=forwarding, **kwargs)
    return ForwardingApp(layer, **kwargs)
