"""The forwarding application: decoupled mode's ASGI 3 app, turning connections into messages.

``towpath serve --settings S`` runs this app instead of the user's. Each HTTP request and each
WebSocket gets a reply channel (``layer.new_channel("interface")``: no I/O, every reply channel of
the process shares one reader); the client's events go out as channel messages
(``http.request``, ``websocket.connect``/``receive``/``disconnect``) and every message that
arrives on the reply channel, whoever sent it, is an ASGI send event written to the client.
``docs/protocol.md`` is the full wire protocol; this module is its server half.

One connection costs the task the server runs the app in plus one more: the app's own task waits
on the reply channel and writes replies out; a second task reads the client (request body,
WebSocket frames, the disconnect) and sends those on. When the second one must stop the first
(the client left, a limit was hit), it moves the first one's ``asyncio.timeout`` deadline to
now: one wake-up path, no extra futures or queues.

Daphne's failure answers are kept: ``ChannelFull`` on a request gets 503, no response start
within ``http_timeout_seconds`` gets 503 (never once a response or a WebSocket has started), a
full ``websocket.connect`` is denied 503, a full ``websocket.receive`` closes the socket 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.config import build_layer, import_from_string, load_settings
from towpath.interface.affinity import HANDBACK_EVENT, Affinity
from towpath.interface.protocol.base import ASGIProtocolError, ClientDisconnected
from towpath.layers.base import (
    BaseChannelLayer,
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    is_process_specific,
    require_valid_channel_name,
)
from towpath.layers.memory import InMemoryChannelLayer

__all__ = [
    "HTTP_REQUEST_CHANNEL",
    "REQUEST_BODY_PREFIX",
    "WEBSOCKET_CONNECT_CHANNEL",
    "WEBSOCKET_DISCONNECT_CHANNEL",
    "WEBSOCKET_RECEIVE_CHANNEL",
    "ForwardingApp",
    "ForwardingStats",
    "forwarding_app_from_settings",
]

logger = logging.getLogger("towpath.interface.forwarding")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HTTP_REQUEST_CHANNEL = "http.request"
#: per-request channels carrying the rest of a body and ``http.disconnect``: prefix + 24 hex
REQUEST_BODY_PREFIX = "http.request.body."
WEBSOCKET_CONNECT_CHANNEL = "websocket.connect"
WEBSOCKET_RECEIVE_CHANNEL = "websocket.receive"
WEBSOCKET_DISCONNECT_CHANNEL = "websocket.disconnect"
#: a reply that abandons an HTTP response (a worker's app raised after it started): the
#: client's connection (HTTP/1.1) or stream (HTTP/2) is reset rather than left waiting
ABORT_EVENT = "towpath.abort"

#: extensions a worker can use through the reply channel; the rest stay in this process
_RELAYED_EXTENSIONS = ("http.response.trailers", "websocket.http.response")
#: scope keys that never cross the layer (the server's own objects, this process's state)
_LOCAL_SCOPE_KEYS = ("extensions", "state")

_TEXT_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]
#: WebSocket close code when no close frame was exchanged (denied, timed out, connection lost)
_ABNORMAL_CLOSE = 1006
#: frames held for a WebSocket being re-dispatched; one more closes it 1013
HELD_FRAMES_MAX = 64


@dataclasses.dataclass(slots=True)
class ForwardingStats:
    """What the forwarding app did, counted as it happens (plain ints: read them for metrics)."""

    #: ``http.request`` messages sent (one per request forwarded)
    http_requests: int = 0
    #: body chunks sent on request channels after the first message
    http_body_chunks: int = 0
    #: ``http.disconnect`` messages sent (client gone before its response completed)
    http_disconnects: int = 0
    #: 503 answers: ``http.request`` full; the layer failing; no response start in time
    http_503_full: int = 0
    http_503_layer: int = 0
    http_503_timeout: int = 0
    #: 413 answers (body over ``max_body_bytes``)
    http_413: int = 0
    #: 502 answers (a reply that is not a valid ASGI event at that point)
    http_502: int = 0
    #: responses a worker abandoned with ``towpath.abort`` (the client's connection is reset)
    http_aborts: int = 0
    websocket_connects: int = 0
    websocket_messages: int = 0
    websocket_disconnects: int = 0
    #: WebSocket handshakes denied 503: ``websocket.connect`` full; the layer failing; no
    #: answer in time
    websocket_503_full: int = 0
    websocket_503_layer: int = 0
    websocket_503_timeout: int = 0
    #: sockets closed 1013 because ``websocket.receive`` was full
    websocket_1013: int = 0
    #: workers declared gone (no heartbeat for ``heartbeat_timeout_seconds``) while they had
    #: connections here
    workers_lost: int = 0
    #: WebSockets re-dispatched as a resumed connect (owner gone, or handed back)
    websocket_redispatched: int = 0
    #: ``towpath.handback`` messages taken from a connection's owner
    websocket_handbacks: int = 0
    #: HTTP requests answered 503 because the worker handling them was gone
    http_503_worker_lost: int = 0
    #: resumed WebSockets closed 1013: more than ``HELD_FRAMES_MAX`` frames held
    websocket_1013_held_overflow: int = 0


def _wire_extensions(extensions: Any) -> dict[str, Any]:
    if not extensions:
        return {}
    return {name: {} for name in _RELAYED_EXTENSIONS if name in extensions}


class ForwardingApp:
    """An ASGI 3 application that forwards every connection to a channel layer.

    ``http_timeout_seconds``: how long a request (or a WebSocket handshake) waits for the start
    of its answer before the server answers 503 itself (``None``: forever). Bodies are sent in
    chunks of at most ``body_chunk_bytes``; a body over ``max_body_bytes`` (``None``: no limit)
    is answered 413. ``stats`` counts what happened. A worker not heard from (heartbeats on
    the control channel) for ``heartbeat_timeout_seconds`` is gone: its requests are answered
    503 and its WebSockets re-dispatched (``towpath.interface.affinity``).
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        *,
        http_timeout_seconds: float | None = 120.0,
        body_chunk_bytes: int = 256 * 1024,
        max_body_bytes: int | None = None,
        heartbeat_timeout_seconds: float = 5.0,
    ) -> None:
        for name in ("send", "receive", "new_channel"):
            if not callable(getattr(layer, name, None)):
                raise InvalidChannelLayerError(
                    f"{layer!r:.80} is not a channel layer: it has no {name}()"
                )
        if http_timeout_seconds is not None and not http_timeout_seconds > 0:
            raise ValueError(
                f"http_timeout_seconds must be > 0 or None, not {http_timeout_seconds!r}"
            )
        if not heartbeat_timeout_seconds > 0:
            raise ValueError(
                f"heartbeat_timeout_seconds must be > 0, not {heartbeat_timeout_seconds!r}"
            )
        if type(body_chunk_bytes) is not int or body_chunk_bytes < 1:
            raise ValueError(f"body_chunk_bytes must be a positive int, not {body_chunk_bytes!r}")
        if max_body_bytes is not None and (type(max_body_bytes) is not int or max_body_bytes < 0):
            raise ValueError(f"max_body_bytes must be an int >= 0 or None, not {max_body_bytes!r}")
        self.layer = layer
        self.http_timeout_seconds = http_timeout_seconds
        self.body_chunk_bytes = body_chunk_bytes
        self.max_body_bytes = max_body_bytes
        self.stats = ForwardingStats()
        self.affinity = Affinity(self, heartbeat_timeout_seconds)
        # The HTTP scope's extensions dict is the server's shared one: convert it once.
        self._extensions_seen: Any = None
        self._extensions_wire: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<ForwardingApp layer={self.layer!r}>"

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _HTTPExchange(self, scope, receive, send).run()
        elif kind == "websocket":
            await _WebSocketExchange(self, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"ForwardingApp cannot serve a {kind!r} scope")

    def wire_scope(self, scope: MutableMapping[str, Any]) -> dict[str, Any]:
        """The scope as it travels: the same keys minus ``state`` (this process's lifespan
        state), with ``extensions`` cut to those a worker can use through the reply channel.
        Tuples go out as msgpack arrays (lists)."""
        wire = dict(scope)
        for key in _LOCAL_SCOPE_KEYS:
            wire.pop(key, None)
        extensions = scope.get("extensions")
        if extensions is not self._extensions_seen:
            self._extensions_seen = extensions
            self._extensions_wire = _wire_extensions(extensions)
        if self._extensions_wire:
            wire["extensions"] = self._extensions_wire
        return wire

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Startup does no I/O (the server starts, and answers 503, while the layer's server
        is down); shutdown closes the layer."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.affinity.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.affinity.stop()
                try:
                    await self.layer.close()
                except Exception as exc:
                    logger.warning("Closing the channel layer failed: %r", exc)
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


class _Exchange:
    """What HTTP and WebSocket forwarding share: the reply loop and how it is stopped."""

    __slots__ = (
        "_deadline",
        "_in_reply_loop",
        "app",
        "layer",
        "listed_by",
        "receive",
        "reply_channel",
        "scope",
        "send",
        "stats",
        "stop",
    )

    def __init__(
        self, app: ForwardingApp, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        self.app = app
        self.layer = app.layer
        self.stats = app.stats
        self.scope = scope
        self.receive = receive
        self.send = send
        self.reply_channel = ""
        #: why the reply loop must stop (set by the client side before waking it), or None
        self.stop: str | None = None
        self._deadline: asyncio.Timeout | None = None
        self._in_reply_loop = False
        #: the worker whose heartbeat listed this connection last (``Affinity``)
        self.listed_by: str | None = None

    def may_list(self, worker: str) -> bool:
        return True

    async def owner_lost(self, worker: str) -> None:
        self.interrupt("worker lost")

    def interrupt(self, reason: str) -> None:
        """Stop the reply loop now (from the client-side task)."""
        if self.stop is None:
            self.stop = reason
        deadline = self._deadline
        if self._in_reply_loop and deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    def no_timeout(self) -> None:
        """The answer started: the rest may take as long as it takes."""
        if self._deadline is not None:
            self._deadline.reschedule(None)

    async def reply_loop(self) -> str:
        """Write out every message of the reply channel until ``handle`` says the exchange is
        over (its reason is returned), the deadline passes (``"timeout"``) or the client side
        interrupts (its reason)."""
        timeout = self.app.http_timeout_seconds
        layer_receive = self.layer.receive
        channel = self.reply_channel
        handle = self.handle
        self._in_reply_loop = True
        try:
            async with asyncio.timeout(timeout) as deadline:
                self._deadline = deadline
                while True:
                    if self.stop is not None:
                        return self.stop
                    done = await handle(await layer_receive(channel))
                    if done is not None:
                        return done
        except TimeoutError:
            return self.stop or "timeout"
        finally:
            self._in_reply_loop = False

    async def handle(self, message: Message) -> str | None:
        raise NotImplementedError

    async def send_quietly(self, channel: str, message: Message) -> bool:
        """Send to the layer where a failure changes nothing we could do (a disconnect
        notice); False if it was not sent."""
        try:
            await self.layer.send(channel, message)
        except (ChannelLayerError, OSError) as exc:
            logger.debug("Could not send %s to %s: %r", message.get("type"), channel, exc)
            return False
        return True


class _HTTPExchange(_Exchange):
    """One HTTP request: forward it (body in chunks), write out the reply, report a client
    that left early."""

    __slots__ = ("body_bytes", "request_channel", "started", "trailers")

    def __init__(
        self, app: ForwardingApp, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        super().__init__(app, scope, receive, send)
        self.request_channel = ""
        self.body_bytes = 0
        self.started = False
        #: the response announced trailers: it ends with them, not with its last body
        self.trailers = False

    async def _answer(self, status: int, text: bytes) -> None:
        if self.started:
            return
        self.started = True
        try:
            await self.send(
                {"type": "http.response.start", "status": status, "headers": _TEXT_PLAIN}
            )
            await self.send({"type": "http.response.body", "body": text})
        except ClientDisconnected:
            pass

    def _declared_too_large(self) -> bool:
        limit = self.app.max_body_bytes
        if limit is None:
            return False
        for name, value in self.scope["headers"]:
            if name.lower() == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return False
        return False

    async def _read_chunk(self, more: bool, pending: bytes) -> tuple[bytes, bool, bool]:
        """Read client body until a chunk is full or the body ends: (chunk, client's
        more_body, client gone). The chunk may be longer than a chunk: the caller splits it."""
        size = self.app.body_chunk_bytes
        if not more or len(pending) >= size:
            return pending, more, False
        parts = [pending] if pending else []
        have = len(pending)
        while more and have < size:
            message = await self.receive()
            if message["type"] != "http.request":
                return b"", False, True
            body = message.get("body", b"")
            if body:
                parts.append(body)
                have += len(body)
            more = message.get("more_body", False)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        return chunk, more, False

    def _over_limit(self, chunk: bytes) -> bool:
        self.body_bytes += len(chunk)
        limit = self.app.max_body_bytes
        return limit is not None and self.body_bytes > limit

    async def run(self) -> None:
        app = self.app
        stats = self.stats
        if self._declared_too_large():
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
            return
        first = await self.receive()
        if first["type"] != "http.request":
            return  # gone before its request was read: nothing to forward
        chunk, client_more, gone = await self._read_chunk(
            first.get("more_body", False), first.get("body", b"")
        )
        if gone:
            return
        size = app.body_chunk_bytes
        rest = b""
        if len(chunk) > size:
            chunk, rest = chunk[:size], chunk[size:]
        if self._over_limit(chunk):
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
            return
        affinity = app.affinity
        control_channel = affinity.control_channel or await affinity.start()
        self.reply_channel = await self.layer.new_channel("interface")
        self.request_channel = REQUEST_BODY_PREFIX + os.urandom(12).hex()
        affinity.add(self)
        try:
            await self._forward(chunk, client_more, rest, control_channel)
        finally:
            affinity.remove(self)

    async def _forward(
        self, chunk: bytes, client_more: bool, rest: bytes, control_channel: str
    ) -> None:
        app = self.app
        stats = self.stats
        try:
            await self.layer.send(
                HTTP_REQUEST_CHANNEL,
                {
                    "type": "http.request",
                    "reply_channel": self.reply_channel,
                    "request_channel": self.request_channel,
                    "control_channel": control_channel,
                    "scope": app.wire_scope(self.scope),
                    "body": chunk,
                    "more_body": client_more or bool(rest),
                },
            )
        except ChannelFull:
            stats.http_503_full += 1
            await self._answer(503, b"Service Unavailable: the server is overloaded")
            return
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not forward a request to the channel layer: %r", exc)
            stats.http_503_layer += 1
            await self._answer(503, b"Service Unavailable: the channel layer is unreachable")
            return
        stats.http_requests += 1
        client_side = asyncio.get_running_loop().create_task(self._client_side(client_more, rest))
        try:
            reason = await self.reply_loop()
        except ClientDisconnected:
            reason = "gone"
        except ASGIProtocolError as exc:
            if self.started:
                raise
            logger.warning("Invalid reply on %s: %s", self.reply_channel, exc)
            stats.http_502 += 1
            await self._answer(502, b"Bad Gateway: invalid response from the worker")
            reason = "bad reply"
        except (ChannelLayerError, OSError) as exc:
            if self.started:
                raise
            logger.warning("Could not receive a reply from the channel layer: %r", exc)
            stats.http_503_layer += 1
            await self._answer(503, b"Service Unavailable: the channel layer is unreachable")
            reason = "layer"
        finally:
            client_side.cancel()
        if reason == "complete" or reason == "layer":
            return  # done; or the layer is down and would not take a disconnect either
        if reason == "abort":
            # the worker gave up mid-response: returning now leaves the response unfinished,
            # which the server answers with a reset (or a 500 if nothing was sent yet)
            stats.http_aborts += 1
            return
        if reason == "worker lost":
            # started: returning leaves the response unfinished, reset as for ``towpath.abort``
            if self.started:
                stats.http_aborts += 1
            else:
                stats.http_503_worker_lost += 1
                await self._answer(503, b"Service Unavailable: the worker handling it was lost")
        elif reason == "timeout":
            stats.http_503_timeout += 1
            await self._answer(503, b"Service Unavailable: no response in time")
        elif reason == "too large":
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
        # The request ended without its response: whoever works on it should stop.
        stats.http_disconnects += 1
        await self.send_quietly(self.request_channel, {"type": "http.disconnect"})

    async def handle(self, message: Message) -> str | None:
        kind = message.get("type")
        if kind == ABORT_EVENT:
            return "abort"
        if kind == "http.response.body":
            await self.send(message)
            if not message.get("more_body", False) and not self.trailers:
                return "complete"
            return None
        if kind == "http.response.start":
            self.no_timeout()
            await self.send(message)
            self.started = True
            self.trailers = bool(message.get("trailers", False))
            return None
        await self.send(message)  # trailers, or something the server refuses
        if kind == "http.response.trailers" and not message.get("more_trailers", False):
            return "complete"
        return None

    async def _client_side(self, more: bool, pending: bytes) -> None:
        """The rest of the body to the request channel, in order; then wait for the client
        to leave."""
        send = self.layer.send
        channel = self.request_channel
        size = self.app.body_chunk_bytes
        while more or pending:
            chunk, more, gone = await self._read_chunk(more, pending)
            if gone:
                self.interrupt("gone")
                return
            pending = b""
            if len(chunk) > size:
                chunk, pending = chunk[:size], chunk[size:]
            if self._over_limit(chunk):
                self.interrupt("too large")
                return
            message = {"type": "http.request", "body": chunk, "more_body": more or bool(pending)}
            if not await self._send_body(send, channel, message):
                return
            self.stats.http_body_chunks += 1
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.interrupt("gone")
                return

    async def _send_body(
        self, send: Callable[[str, Message], Awaitable[None]], channel: str, message: Message
    ) -> bool:
        """Send one body chunk; a full request channel is back-pressure (the worker reads it
        slower than the client uploads), so retry, backing off, until the request's deadline."""
        delay = 0.005
        loop = asyncio.get_running_loop()
        timeout = self.app.http_timeout_seconds
        give_up = None if timeout is None else loop.time() + timeout
        while True:
            try:
                await send(channel, message)
                return True
            except ChannelFull:
                if give_up is not None and loop.time() + delay > give_up:
                    self.interrupt("timeout")
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except (ChannelLayerError, OSError) as exc:
                logger.warning("Could not forward a request body chunk: %r", exc)
                self.interrupt("timeout")
                return False


class _WebSocketExchange(_Exchange):
    """One WebSocket: connect, the worker's answer, frames both ways, one disconnect."""

    __slots__ = ("accepted", "close_code", "closing", "held", "order", "owner", "resuming")

    def __init__(
        self, app: ForwardingApp, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        super().__init__(app, scope, receive, send)
        #: where this connection's later events go; None: the ``websocket.receive`` and
        #: ``websocket.disconnect`` channels; an accept carrying ``owner`` (the hosting
        #: worker's process channel) sets it.
        self.owner: str | None = None
        self.order = 0
        self.accepted = False
        #: the code of the close frame sent for the worker (1006: none was exchanged)
        self.close_code = _ABNORMAL_CLOSE
        #: a close was sent or the client left: no more events are forwarded but the disconnect
        self.closing = False
        #: re-dispatched, its resumed connect not answered yet: client frames are held
        self.resuming = False
        self.held: list[Message] = []

    def may_list(self, worker: str) -> bool:
        return self.owner == worker

    async def owner_lost(self, worker: str) -> None:
        if self.owner == worker and self.accepted and not self.closing:
            await self.redispatch()

    async def redispatch(self) -> bool:
        """Send the connection to another worker as a resumed connect (same reply channel,
        ``order`` continuing); hold the client's frames until its accept. False (and the socket
        closed 1013) if the connect could not be sent."""
        self.app.affinity.unlist(self)
        self.owner = None
        self.resuming = True
        self.order += 1
        scope = self.app.wire_scope(self.scope)
        scope["resumed"] = True
        self.stats.websocket_redispatched += 1
        try:
            await self.layer.send(
                WEBSOCKET_CONNECT_CHANNEL,
                {
                    "type": "websocket.connect",
                    "reply_channel": self.reply_channel,
                    "control_channel": self.app.affinity.control_channel,
                    "scope": scope,
                    "order": self.order,
                },
            )
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not re-dispatch %s: %r", self.reply_channel, exc)
            await self._close_1013("lost")
            return False
        return True

    async def _release_held(self) -> bool:
        """The resumed connect was accepted: the held frames, in order, to the new owner."""
        held = self.held
        send = self.layer.send
        index = 0
        try:
            while index < len(held):  # the client side may append while we send
                await send(self.owner or WEBSOCKET_RECEIVE_CHANNEL, held[index])
                self.stats.websocket_messages += 1
                index += 1
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not forward held WebSocket messages: %r", exc)
            await self._close_1013("lost")
            return False
        self.held = []
        self.resuming = False
        return True

    async def _close_1013(self, reason: str) -> None:
        """Close the client 1013 and send the disconnect (from outside the client side)."""
        self.closing = True
        self.resuming = False
        self.held = []
        if self.stop is None:
            self.stop = reason
        with contextlib.suppress(ClientDisconnected):
            await self.send({"type": "websocket.close", "code": 1013})
        self.interrupt(reason)
        await self._disconnected(1013)

    async def _deny(self, reason: bytes) -> None:
        """Refuse the handshake with a 503 (plain close where the denial extension is absent)."""
        try:
            if "websocket.http.response" in (self.scope.get("extensions") or {}):
                await self.send(
                    {"type": "websocket.http.response.start", "status": 503, "headers": _TEXT_PLAIN}
                )
                await self.send({"type": "websocket.http.response.body", "body": reason})
            else:
                await self.send({"type": "websocket.close", "code": 1013})
        except ClientDisconnected:
            pass

    async def _disconnected(self, code: int, reason: str | None = None) -> None:
        """Send the connection's one ``websocket.disconnect``."""
        if self.order < 0:
            return
        self.order += 1
        message: Message = {
            "type": "websocket.disconnect",
            "reply_channel": self.reply_channel,
            "code": code,
            "order": self.order,
        }
        if reason:
            message["reason"] = reason
        self.order = -1
        self.closing = True
        self.stats.websocket_disconnects += 1
        await self.send_quietly(self.owner or WEBSOCKET_DISCONNECT_CHANNEL, message)

    async def run(self) -> None:
        first = await self.receive()
        if first["type"] != "websocket.connect":
            return
        affinity = self.app.affinity
        control_channel = affinity.control_channel or await affinity.start()
        self.reply_channel = await self.layer.new_channel("interface")
        affinity.add(self)
        try:
            await self._forward(control_channel)
        finally:
            affinity.remove(self)

    async def _forward(self, control_channel: str) -> None:
        stats = self.stats
        try:
            await self.layer.send(
                WEBSOCKET_CONNECT_CHANNEL,
                {
                    "type": "websocket.connect",
                    "reply_channel": self.reply_channel,
                    "control_channel": control_channel,
                    "scope": self.app.wire_scope(self.scope),
                    "order": 0,
                },
            )
        except ChannelFull:
            stats.websocket_503_full += 1
            await self._deny(b"Service Unavailable: the server is overloaded")
            return
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not forward a WebSocket connect to the channel layer: %r", exc)
            stats.websocket_503_layer += 1
            await self._deny(b"Service Unavailable: the channel layer is unreachable")
            return
        stats.websocket_connects += 1
        client_side = asyncio.get_running_loop().create_task(self._client_side())
        try:
            reason = await self.reply_loop()
        except ClientDisconnected:
            reason = "gone"
        except ASGIProtocolError as exc:
            logger.warning("Invalid reply on %s: %s", self.reply_channel, exc)
            if self.stop is None:
                client_side.cancel()
                await self._disconnected(1011 if self.accepted else _ABNORMAL_CLOSE)
            raise  # the server closes 1011 (or answers 500 to the handshake)
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not receive from the channel layer: %r", exc)
            if not self.accepted:
                stats.websocket_503_layer += 1
                await self._deny(b"Service Unavailable: the channel layer is unreachable")
            reason = "layer"
        if self.stop is not None:
            if self.stop == "lost":  # closed 1013 from here (re-dispatch failed)
                client_side.cancel()
            else:
                await client_side  # the client side ended it and sends the disconnect
            return
        client_side.cancel()
        if reason == "timeout":
            stats.websocket_503_timeout += 1
            await self._deny(b"Service Unavailable: no answer in time")
        await self._disconnected(self.close_code if reason == "closed" else _ABNORMAL_CLOSE)

    async def handle(self, message: Message) -> str | None:
        kind = message.get("type")
        if kind == "websocket.send":
            await self.send(message)
            return None
        if kind == "websocket.accept":
            owner = message.pop("owner", None)  # a towpath key: where later events go
            if isinstance(owner, str) and is_process_specific(owner) and _is_channel_name(owner):
                self.owner = owner
            elif owner is not None:
                logger.debug(
                    "Ignored owner %r of %s: not a process channel", owner, self.reply_channel
                )
            if self.resuming:  # the client is accepted already: only the owner changes
                return None if await self._release_held() else "lost"
            self.no_timeout()
            await self.send(message)
            self.accepted = True
            return None
        if kind == HANDBACK_EVENT:
            if (
                self.accepted
                and not self.closing
                and not self.resuming
                and self.owner is not None
                and message.get("worker") == self.owner
            ):
                self.stats.websocket_handbacks += 1
                return None if await self.redispatch() else "lost"
            logger.debug("Ignored a handback of %s: %r", self.reply_channel, message)
            return None
        if kind == "websocket.close":
            self.closing = True
            self.resuming = False
            await self.send(message)
            if self.accepted:
                self.close_code = message.get("code") or 1000
            return "closed"
        if kind == "websocket.http.response.start":
            self.no_timeout()
            await self.send(message)
            return None
        await self.send(message)
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.closing = True
            return "closed"
        return None

    async def _client_side(self) -> None:
        """Client frames to ``websocket.receive`` (or the owner), in order, then the
        disconnect."""
        receive = self.receive
        send = self.layer.send
        stats = self.stats
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if self.closing:
                    continue
                self.order += 1
                event: Message = {
                    "type": "websocket.receive",
                    "reply_channel": self.reply_channel,
                    "order": self.order,
                }
                text = message.get("text")
                if text is not None:
                    event["text"] = text
                else:
                    event["bytes"] = message.get("bytes")
                if self.resuming:
                    self.held.append(event)
                    if len(self.held) > HELD_FRAMES_MAX:
                        stats.websocket_1013_held_overflow += 1
                        self.stop = "full"
                        await self._close_1013("full")
                        return
                    continue
                try:
                    await send(self.owner or WEBSOCKET_RECEIVE_CHANNEL, event)
                except (ChannelLayerError, OSError) as exc:
                    if isinstance(exc, ChannelFull):
                        stats.websocket_1013 += 1
                    else:
                        logger.warning("Could not forward a WebSocket message: %r", exc)
                    self.closing = True
                    self.stop = "full"
                    with contextlib.suppress(ClientDisconnected):
                        await self.send({"type": "websocket.close", "code": 1013})
                    self.interrupt("full")
                    await self._disconnected(1013)
                    return
                stats.websocket_messages += 1
            elif kind == "websocket.disconnect":
                self.interrupt("gone")
                await self._disconnected(message.get("code", 1005), message.get("reason"))
                return


def _is_channel_name(channel: str) -> bool:
    """True for a valid channel name (an owner that is not one is ignored)."""
    try:
        require_valid_channel_name(channel)
    except TypeError:
        return False
    return True


def forwarding_app_from_settings(
    settings: str | None,
    layer_alias: str = "default",
    *,
    allow_in_memory: bool = False,
    **kwargs: Any,
) -> ForwardingApp:
    """Build the forwarding app for ``towpath serve --settings``.

    ``settings`` is a settings module (dotted name or ``.py`` path; its ``CHANNEL_LAYERS``
    entry ``layer_alias`` is built), or ``module:attr`` naming a channel layer object; ``None``
    reads ``TOWPATH_SETTINGS``. The in-memory layer is refused unless ``allow_in_memory``:
    workers in other processes would never see a message. ``kwargs`` go to
    :class:`ForwardingApp`. Raises ``InvalidChannelLayerError`` (or ``ImportError``) naming
    what is wrong.
    """
    layer: Any
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
        layer = build_layer(load_settings(settings).layer(layer_alias))
    if isinstance(layer, InMemoryChannelLayer) and not allow_in_memory:
        raise InvalidChannelLayerError(
            f"Channel layer {layer_alias!r} is an InMemoryChannelLayer: messages never leave "
            "this process, so no worker would see a request. Use a layer that crosses "
            "processes (towpath.layers.redis.RedisChannelLayer), or run everything in one "
            "process with `towpath runserver`."
        )
    return ForwardingApp(layer, **kwargs)
