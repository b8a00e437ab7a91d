"""The ASGI host: ASGI 3 app instances driven by channel-layer messages.

An ``http.request`` message starts one app instance whose ``receive`` yields the message's
body, then reads the request channel (the rest of the body, ``http.disconnect``), and whose
``send`` sends to the reply channel. A ``websocket.connect`` starts one instance fed by a small
queue: the worker puts that connection's later ``websocket.receive``/``websocket.disconnect``
there. The accept carries ``"owner"`` (the worker's process channel) so the interface server
sends the rest of that connection's events to this worker, in order (``docs/protocol.md``).

A WebSocket's scope carries the ``towpath.handback`` extension (a dict the host keeps): a
consumer that receives group messages on a layer channel writes that channel there
(``"channel"``), and reads ``"resumed_from"`` (its predecessor's channel) and ``"timeout"``
when it is a resumed connection — how a handback loses no group message (``docs/affinity.md``)
— and ``"abandoned"``, an ``asyncio.Event`` set when the connection's server is gone.

A connection whose interface server is gone, or says it no longer holds it, is *abandoned*
(``abandon()``): its app sees the disconnect at once and its sends raise.

A full reply channel is back-pressure: every send waits for room for as long as the connection
is still this worker's (:mod:`towpath.worker.room`), then raises ``ConnectionClosed``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath import lifespan
from towpath.layers.base import BaseChannelLayer, ChannelLayerError
from towpath.lifespan import LifespanFailure
from towpath.wire import ABORT_EVENT, HANDBACK_END_EVENT, TEXT_PLAIN
from towpath.worker.room import ReplyRoom

__all__ = [
    "ConnectionClosed",
    "HostedHTTP",
    "HostedWebSocket",
    "Lifespan",
    "LifespanFailure",
]

logger = logging.getLogger("towpath.worker")

Message = dict[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: sent after a response started when the app failed: not an ASGI event, so the interface
#: server resets the connection rather than leave the client waiting for the rest
_ABORT: Message = {"type": ABORT_EVENT}
_DISCONNECT: Message = {"type": "http.disconnect"}
#: as a message carries it (arrays)
_TEXT_PLAIN = [list(header) for header in TEXT_PLAIN]
#: "service restart": the worker is stopping; the client should reconnect
SERVICE_RESTART = 1012
#: the ``seq`` of each ``websocket.send`` this process sends: increasing per worker (its
#: ``owner``), so a server that got one twice writes it once
_OUTPUT_SEQ = itertools.count(1)


class ConnectionClosed(OSError):
    """``send`` on a connection the client already left, or that is no longer this worker's
    (ASGI 2.4: an ``OSError``)."""


def _control_channel(message: Message) -> str | None:
    control = message.get("control_channel")
    return control if isinstance(control, str) and control else None


class HostedHTTP:
    """One HTTP request served by an app instance. The response start is held back until the
    first body so both go out together (one round trip on Redis). ``room``: the worker's
    waits for room in full reply channels."""

    __slots__ = (
        "_abandoned",
        "_first",
        "complete",
        "control_channel",
        "disconnected",
        "layer",
        "pending_start",
        "reply_channel",
        "request_channel",
        "room",
        "started",
        "trailers",
    )

    def __init__(
        self, layer: BaseChannelLayer, message: Message, room: ReplyRoom | None = None
    ) -> None:
        self.layer = layer
        self.room = room if room is not None else ReplyRoom()
        self.reply_channel: str = message["reply_channel"]
        self.request_channel: str | None = message.get("request_channel")
        #: the interface server's control channel (heartbeats), when it gave one
        self.control_channel: str | None = _control_channel(message)
        self._first: Message | None = {
            "type": "http.request",
            "body": message.get("body", b""),
            "more_body": bool(message.get("more_body", False)),
        }
        self.pending_start: Message | None = None
        self.started = False
        self.trailers = False
        self.complete = False
        self.disconnected = False
        #: set when the request is abandoned (its server gone): wakes a pending receive
        self._abandoned: asyncio.Future[None] | None = None

    def abandon(self) -> bool:
        """The request's interface server is gone (or no longer holds it): the app sees
        ``http.disconnect`` (now, if it waits on ``receive()``); its sends raise, and one
        waiting for room ends. False when it had completed or been disconnected already."""
        if self.disconnected:
            return False
        self.disconnected = True
        if self._abandoned is not None and not self._abandoned.done():
            self._abandoned.set_result(None)
        return not self.complete

    async def _read_request_channel(self, channel: str) -> Message:
        """The next message of the request channel, or ``http.disconnect`` once abandoned."""
        if self._abandoned is None:
            self._abandoned = asyncio.get_running_loop().create_future()
        reading = asyncio.ensure_future(self.layer.receive(channel))
        waits: set[asyncio.Future[Any]] = {reading, self._abandoned}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not reading.done():
                reading.cancel()  # a receive cancelled takes nothing off the layer
        if not reading.done() or reading.cancelled():
            return _DISCONNECT
        return reading.result()

    async def receive(self) -> Message:
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self.complete or self.disconnected or self.request_channel is None:
            return _DISCONNECT
        if self.pending_start is not None:  # the app waits: let the client see the head
            start, self.pending_start = self.pending_start, None
            await self._send(start)
        event = await self._read_request_channel(self.request_channel)
        if event.get("type") == "http.disconnect":
            self.disconnected = True
            return _DISCONNECT
        return event

    async def send(self, event: Message) -> None:
        if self.disconnected:
            raise ConnectionClosed(f"the client of {self.reply_channel} has gone")
        kind = event.get("type")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.trailers = bool(event.get("trailers", False))
            self.pending_start = event
            return
        if kind == "http.response.body":
            if not event.get("more_body", False) and not self.trailers:
                self.complete = True
        elif kind == "http.response.trailers" and not event.get("more_trailers", False):
            self.complete = True
        start = self.pending_start
        if start is None:
            await self._send(event)
            return
        self.pending_start = None
        await self._send_pair(start, event)

    async def fail(self, status: int = 500, text: bytes = b"Internal Server Error") -> None:
        """The app failed (or returned, or was cut) before completing its response: a plain
        ``status`` if nothing went out yet, else reset the connection."""
        if self.complete or self.disconnected:
            return
        self.complete = True
        if self.pending_start is not None or not self.started:
            self.pending_start = None
            start = {"type": "http.response.start", "status": status, "headers": _TEXT_PLAIN}
            body = {"type": "http.response.body", "body": text, "more_body": False}
            await self._send_pair(start, body)
        else:
            await self._send(_ABORT)

    def _ours(self) -> bool:
        return not self.disconnected

    async def _send(self, event: Message) -> None:
        """Send to the reply channel, waiting for room while it is full and the request is
        still this worker's; ``ConnectionClosed`` once it is not."""
        if not await self.room.send(self.layer.send, self.reply_channel, event, self._ours):
            raise ConnectionClosed(f"the client of {self.reply_channel} has gone")

    async def _send_pair(self, start: Message, body: Message) -> None:
        """The response start and its first body in one go (one round trip on Redis); what
        found the channel full then waits for room, in order. When one of the two was full it
        was the body: both reach the channel in order."""
        channel = self.reply_channel
        full = await self.layer.send_many([(channel, start), (channel, body)])
        if len(full) > 1:
            await self._send(start)
        if full:
            await self._send(body)


class HostedWebSocket:
    """One WebSocket served by an app instance; the worker feeds it with :meth:`deliver`."""

    __slots__ = (
        "accepted",
        "answered",
        "closed",
        "control_channel",
        "delivered_order",
        "end_order",
        "ended",
        "extension",
        "frame_order",
        "handed_back",
        "handled_order",
        "handling",
        "layer",
        "lost",
        "on_answered",
        "orders",
        "owner",
        "queue",
        "reply_channel",
        "resumed",
        "room",
        "taken_order",
    )

    def __init__(
        self,
        layer: BaseChannelLayer,
        message: Message,
        owner: str,
        on_answered: Callable[[HostedWebSocket], None],
        handback_timeout: float = 10.0,
        room: ReplyRoom | None = None,
    ) -> None:
        self.layer = layer
        self.reply_channel: str = message["reply_channel"]
        self.control_channel: str | None = _control_channel(message)
        self.owner = owner
        #: the worker's waits for room in full reply channels
        self.room = room if room is not None else ReplyRoom()
        scope = message.get("scope")
        #: a resumed connection (the consumer's ``scope["resumed"]``)
        self.resumed = isinstance(scope, dict) and scope.get("resumed") is True
        resumed_from = message.get("resumed_from")
        lost_from = message.get("lost_from")
        #: the ``towpath.handback`` scope extension (the consumer adds ``"channel"``)
        self.extension: dict[str, Any] = {
            "resumed_from": resumed_from if isinstance(resumed_from, str) else None,
            # the consumer channel of a lost owner: its successor takes its place in its groups
            "lost_from": lost_from if isinstance(lost_from, str) else None,
            "timeout": handback_timeout,
            # set when the connection's server is gone: no successor will take over
            "abandoned": asyncio.Event(),
        }
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.queue.put_nowait({"type": "websocket.connect"})
        #: the type of the last event the app took (what it was handling if it raises)
        self.handling = "websocket.connect"
        #: the ``order`` of each queued client frame; of the last one the app took; and of the
        #: last one it was done with (it asked for the next event since): the heartbeats
        #: report that one, so a server that loses this worker knows how many frames it sent
        #: were possibly never handled (docs/protocol.md, section 10)
        self.orders: collections.deque[int] = collections.deque()
        start = message.get("order", 0) if isinstance(message.get("order"), int) else 0
        self.taken_order: int = start
        self.handled_order: int = start
        #: the ``order`` of the last client frame delivered; after a handback, the server's
        #: ``towpath.handback.end`` names the last one to wait for (``end_order``)
        self.delivered_order = start
        #: the ``order`` of the last client frame delivered (None: none yet): one not above it
        #: is a repeat. Not the connect's: frames held while a connection was handed back may
        #: come before the resumed connect's ``order``
        self.frame_order: int | None = None
        self.end_order: int | None = None
        #: called once the handshake is answered (accept, close or denial)
        self.on_answered = on_answered
        self.answered = False
        self.accepted = False
        #: the app sent websocket.close (or a denial)
        self.closed = False
        #: the instance was given its websocket.disconnect
        self.ended = False
        #: the worker handed the connection back to its interface server (stopping)
        self.handed_back = False
        #: its interface server is gone, or no longer holds it (:meth:`abandon`)
        self.lost = False

    def deliver(self, message: Message) -> None:
        """A layer message of this connection (``websocket.receive``/``disconnect``)."""
        if self.ended:
            return
        kind = message.get("type")
        if kind == "websocket.receive":
            event: Message = {"type": kind}
            if message.get("text") is not None:
                event["text"] = message["text"]
            else:
                event["bytes"] = message.get("bytes")
            order = message.get("order")
            if isinstance(order, int):
                if self.frame_order is not None and order <= self.frame_order:
                    # sent again by a server whose first send was cut short by a layer
                    # outage (it may or may not have been stored): this one had it already
                    logger.debug("Dropped frame %d of %s: a repeat", order, self.reply_channel)
                    return
                self.frame_order = order
                self.delivered_order = max(self.delivered_order, order)
            self.orders.append(order if isinstance(order, int) else self.taken_order)
            self.queue.put_nowait(event)
            if self.end_order is not None:
                self._finish_handback()
        elif kind == "websocket.disconnect":
            self._end(message.get("code", 1005), message.get("reason"))
        elif kind == HANDBACK_END_EVENT and self.handed_back:
            order = message.get("order")
            self.end_order = order if isinstance(order, int) else self.delivered_order
            self._finish_handback()
        else:
            logger.debug("Dropped a %r message for WebSocket %s", kind, self.reply_channel)

    def _end(self, code: int, reason: str | None = None) -> None:
        self.ended = True
        event: Message = {"type": "websocket.disconnect", "code": code}
        if reason:
            event["reason"] = reason
        if self.handed_back:
            event["handed_back"] = True
        self.queue.put_nowait(event)

    def abandon(self) -> bool:
        """The connection's interface server is gone, or says it no longer holds it: the
        instance gets ``websocket.disconnect`` (1006) now, not as a handback (no successor
        will take over), and nothing more is sent for it. False when it had ended already
        (a handed-back instance waiting for its successor's cut stops waiting)."""
        if self.lost:
            return False
        self.lost = True
        self.extension["abandoned"].set()
        if self.ended:
            return False
        self.ended = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self._answer()
        return True

    @property
    def owned(self) -> bool:
        """Accepted, not closing, and still this worker's: what heartbeats list and what a
        graceful stop hands back."""
        return self.accepted and not self.ended and not self.closed and not self.handed_back

    def hand_back(self) -> None:
        """The connection was handed back: the instance keeps being fed the client frames the
        server sent before it knew; after the last one (``towpath.handback.end``) it gets
        ``websocket.disconnect`` (1012, ``handed_back``). The client stays connected: another
        worker resumes it. Without that word within the handback timeout it ends anyway."""
        self.handed_back = True
        loop = asyncio.get_running_loop()
        loop.call_later(self.extension["timeout"], self._end_handed_back)

    def _end_handed_back(self) -> None:
        if not self.ended:
            logger.warning(
                "No end of frames for handed-back WebSocket %s from its server in %.3g s",
                self.reply_channel,
                self.extension["timeout"],
            )
            self._end(SERVICE_RESTART)

    def _finish_handback(self) -> None:
        end = self.end_order
        if not self.ended and end is not None and self.delivered_order >= end:
            self._end(SERVICE_RESTART)

    def _answer(self) -> None:
        if not self.answered:
            self.answered = True
            self.on_answered(self)

    async def receive(self) -> Message:
        self.handled_order = self.taken_order  # asking for more: done with the last one
        event = await self.queue.get()
        self.handling = event["type"]
        if event["type"] == "websocket.receive" and self.orders:
            self.taken_order = self.orders.popleft()
        return event

    async def send(self, event: Message) -> None:
        kind = event.get("type")
        if kind == "websocket.send":
            # ``owner``: the server holds a resumed instance's output while the previous
            # owner drains; ``seq``: it writes a frame sent twice (_send_output) once
            event = {**event, "owner": self.owner, "seq": next(_OUTPUT_SEQ)}
        if self.handed_back:
            # The client is still connected (resumed elsewhere): a frame the instance sends
            # until it has left its groups still reaches it; a close or an accept must not.
            if kind == "websocket.send":
                await self._send_output(event)
            else:
                logger.debug("Dropped a %r from a handed-back WebSocket instance", kind)
            return
        if self.ended and not self.closed:
            raise ConnectionClosed(f"the WebSocket {self.reply_channel} is closed")
        if kind == "websocket.accept":
            event = {**event, "owner": self.owner}
            consumer = self.extension.get("channel")
            if isinstance(consumer, str):  # a towpath consumer's channel (docs/protocol.md)
                event["consumer"] = consumer
            await self._send(event)
            self.accepted = True
            self._answer()
            return
        if kind == "websocket.send":
            await self._send_output(event)
            return
        await self._send(event)
        if kind == "websocket.close":
            self.closed = True
            if not self.accepted:  # rejected: the server's 1006 goes to the shared channel
                self._end(1006)
            self._answer()
        elif kind == "websocket.http.response.start":
            self._answer()
        elif kind == "websocket.http.response.body" and not event.get("more_body", False):
            self.closed = True
            self._end(1006)

    async def _send_output(self, event: Message) -> None:
        """Send a ``websocket.send`` (waiting for room: :meth:`_send`); once more if the layer
        failed on it (its connection to its server broke: the frame may or may not have been
        stored; the layer waits for its server to be back). The server writes a ``seq`` of
        this worker it has written already no second time (``docs/protocol.md``, 10)."""
        try:
            await self._send(event)
        except ConnectionClosed:
            raise
        except (ChannelLayerError, OSError) as exc:
            logger.info("Sending output %d of %s again: %r", event["seq"], self.reply_channel, exc)
            await self._send(event)

    def _ours(self) -> bool:
        """Still this worker's to write to: its server holds it for this worker, and its
        client did not leave (a handed-back one stays connected, resumed elsewhere)."""
        return not self.lost and (self.handed_back or not self.ended)

    async def _send(self, event: Message) -> None:
        """Send to the reply channel; a full one is waited on (back-pressure) for as long as
        the connection is this worker's (:meth:`_ours`) and the worker has not cut its waits
        (:class:`~towpath.worker.room.ReplyRoom`); then ``ConnectionClosed``."""
        if await self.room.send(self.layer.send, self.reply_channel, event, self._ours):
            return
        if self.lost:
            why = "its interface server is gone, or no longer holds it"
        elif self.ended and not self.handed_back:
            why = "it is closed"
        else:
            why = "the worker stopped waiting for room in its reply channel (it is stopping)"
        raise ConnectionClosed(f"WebSocket {self.reply_channel}: {why}")

    async def close(self, code: int) -> None:
        """Close from the worker's side (the app failed, returned, or the worker stops)."""
        if self.closed or self.lost or self.handed_back or (self.ended and self.accepted):
            return  # (a handed-back client is another worker's to close)
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": code})
        finally:
            self._end(code if self.accepted else 1006)
            self._answer()


class Lifespan(lifespan.Lifespan):
    """ASGI lifespan for a hosted app (:mod:`towpath.lifespan`): startup when the worker
    starts, shutdown when it stops, always in ``"auto"`` mode: an app that raises before
    answering startup does not support lifespan (as uvicorn's ``auto``): logged, and the worker
    goes on without. Failures are worded ``the app's lifespan startup failed: ...``, and
    shutdown waits for the app's lifespan coroutine to return."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            app, "auto", subject="the app's lifespan", logger=logger, wait_for_exit=True
        )
