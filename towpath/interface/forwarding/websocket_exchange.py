"""The forwarding app's WebSocket exchange: connect, the worker's answer, frames both ways,
one disconnect; re-dispatch when the owner is gone or hands it back (``docs/protocol.md``).

A handback is *make before break*: the old owner keeps serving the connection (its consumer
stays in its groups) until the new owner has joined them and the two consumers agreed on a cut
(``docs/affinity.md``). Meanwhile this exchange *drains* the old owner: its output goes to the
client at once, the new owner's output (tagged with ``owner``) and the client's frames are held,
and both are let out, in order, when the old owner says ``towpath.released``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.interface.forwarding.context import ExchangeContext
from towpath.interface.forwarding.exchange import Message, Receive, Send, _Exchange
from towpath.interface.forwarding.outcome import Outcome
from towpath.interface.protocol.base import WS_OUTPUT_LIMIT_EXTENSION, WS_TOO_SLOW_DISCONNECT
from towpath.layers.base import (
    ChannelFull,
    ChannelLayerError,
    is_process_specific,
    require_valid_channel_name,
)
from towpath.layers.outages import send_patiently
from towpath.wire import (
    HANDBACK_END_EVENT,
    HANDBACK_EVENT,
    RELEASED_EVENT,
    TEXT_PLAIN,
    WEBSOCKET_CONNECT_CHANNEL,
    WEBSOCKET_DISCONNECT_CHANNEL,
    WEBSOCKET_RECEIVE_CHANNEL,
)

logger = logging.getLogger("towpath.interface.forwarding")

#: WebSocket close code when no close frame was exchanged (denied, timed out, connection lost)
_ABNORMAL_CLOSE = 1006
#: frames held for a WebSocket being re-dispatched; one more closes it 1013
HELD_FRAMES_MAX = 64
#: the new owner's output held while the old one drains; past this it is let out at once
HELD_OUTPUT_MAX = 4096


# The life of a forwarded WebSocket is two states, each only ever set by the transitions drawn
# here (as h11's ``_state.py`` keeps its rules in one place).
#
# ``Phase`` (:attr:`_WebSocketExchange.phase`): how far the connection is; it only goes forward.
#
#   FORWARDING --(a close or denial sent to the client; the client gone; a 1013)--> CLOSING
#   FORWARDING or CLOSING --(the one websocket.disconnect sent: _disconnected)--> DISCONNECTED
#
# FORWARDING: the connect went out; client frames and the worker's output are forwarded (the
# worker's accept does not change the phase: ``accepted`` records it). CLOSING: nothing more is
# forwarded but the disconnect. DISCONNECTED: the disconnect was sent; a second one never is (a
# worker that answers late is told by ``_linger``).
#
# ``Handover`` (:attr:`_WebSocketExchange.handover`): who the connection's worker is while it
# moves from one worker to another; anything but STEADY holds the client's frames.
#
#   STEADY --(the owner is lost: redispatch)---------------------------------> RESUMING
#   STEADY --(the owner hands it back: hand_back, then redispatch)-----------> HANDING_BACK
#   HANDING_BACK --(the successor accepts: _on_accept)-----------------------> DRAINING
#   HANDING_BACK --(the old owner is done first: _end_drain)-----------------> RESUMING
#   RESUMING --(the successor accepts: _release_held)------------------------> RELEASING
#   DRAINING --(the old owner is done, or silent, or too much held: _end_drain) -> RELEASING
#   RELEASING --(the held frames went to the new owner)----------------------> STEADY
#   RELEASING --(the new owner is lost meanwhile: redispatch)----------------> RESUMING
#   any --(closed: _close_1013, _on_close)-----------------------------------> STEADY
#
# RESUMING: a resumed connect went out and no worker answered yet. HANDING_BACK: the same, and
# the old owner (``draining_from``) still serves what it was sent. DRAINING: the successor
# accepted; its output is held until the old owner says ``towpath.released``. RELEASING: the
# held client frames are being sent to the new owner.
class Phase(enum.Enum):
    FORWARDING = "forwarding"
    CLOSING = "closing"
    DISCONNECTED = "disconnected"


class Handover(enum.Enum):
    STEADY = "steady"
    RESUMING = "resuming"
    HANDING_BACK = "handing back"
    DRAINING = "draining"
    RELEASING = "releasing"


class _WebSocketExchange(_Exchange):
    """One WebSocket: connect, the worker's answer, frames both ways, one disconnect."""

    __slots__ = (
        "accepted",
        "close_code",
        "confirmed_order",
        "consumer_channel",
        "drain_end_order",
        "draining_from",
        "handover",
        "held",
        "held_output",
        "order",
        "output_seqs",
        "owner",
        "phase",
        "refused",
        "resumed_from",
        "sent_order",
        "start_order",
        "unanswered_disconnect",
    )

    def __init__(
        self, ctx: ExchangeContext, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        super().__init__(ctx, scope, receive, send)
        #: where this connection's later events go; None: the ``websocket.receive`` and
        #: ``websocket.disconnect`` channels; an accept carrying ``owner`` (the hosting
        #: worker's process channel) sets it.
        self.owner: str | None = None
        self.order = 0
        self.accepted = False
        #: the code of the close frame sent for the worker (1006: none was exchanged)
        self.close_code = _ABNORMAL_CLOSE
        #: where the connection is in its life (``Phase``: the transitions are above it)
        self.phase = Phase.FORWARDING
        #: who the connection's worker is while it moves (``Handover``: the transitions are
        #: above it); the client's frames are held unless STEADY
        self.handover = Handover.STEADY
        self.held: list[Message] = []
        #: the old owner of a handed-back connection (HANDING_BACK, DRAINING; None otherwise)
        #: until it says ``towpath.released``
        self.draining_from: str | None = None
        #: the ``order`` of the last client frame sent to the old owner
        self.drain_end_order = 0
        self.held_output: list[Message] = []
        #: the old owner's consumer channel, named in the resumed connect (``resumed_from``)
        self.resumed_from: str | None = None
        #: the owner's consumer channel, named in its accept (``consumer``): if the owner is
        #: lost, the resumed connect names it (``lost_from``) and the successor takes its place
        #: in its groups
        self.consumer_channel: str | None = None
        #: a worker answered the (resumed) connect with a close or a denial
        self.refused = False
        #: the disconnect sent while no worker had answered the connect (see ``_linger``)
        self.unanswered_disconnect: Message | None = None
        #: loss accounting for a worker that dies: the ``order`` of the connect the current
        #: owner answered, of the last frame sent to it, and of the last frame its heartbeats
        #: said its app took; frames between the last two were possibly never handled
        self.start_order = 0
        self.sent_order = 0
        self.confirmed_order = 0
        #: the last ``seq`` of output written, by the worker that sent it (a repeat is dropped)
        self.output_seqs: dict[str, int] = {}

    def confirm(self, order: int) -> None:
        if order > self.confirmed_order:
            self.confirmed_order = order

    def may_list(self, worker: str) -> bool:
        return self.owner == worker

    def draining_alive(self, worker: str) -> None:
        if worker == self.draining_from and self.handover is Handover.DRAINING:
            # the old owner lives: its deadline moves (it ends when the old owner is silent)
            self.timeout_in(self.ctx.affinity.heartbeat_timeout)

    @property
    def closing(self) -> bool:
        """A close was sent or the client left: no more events are forwarded but the
        disconnect (``Phase.CLOSING`` or later)."""
        return self.phase is not Phase.FORWARDING

    def _stop_forwarding(self) -> None:
        """FORWARDING -> CLOSING (a later phase stays)."""
        if self.phase is Phase.FORWARDING:
            self.phase = Phase.CLOSING

    @property
    def holding(self) -> bool:
        """Client frames wait here: the connection is moving between workers."""
        return self.handover is not Handover.STEADY

    @property
    def resuming(self) -> bool:
        """A resumed connect went out and no worker answered it yet."""
        return self.handover is Handover.RESUMING or self.handover is Handover.HANDING_BACK

    async def owner_lost(self, worker: str) -> None:
        if self.owner == worker and self.accepted and not self.closing:
            # frames sent to the lost worker that its heartbeats never reported as taken: at
            # most this many are lost (some may have been handled after the last heartbeat)
            confirmed = max(self.confirmed_order, self.start_order)
            if self.sent_order > confirmed:
                self.stats.websocket_frames_maybe_lost += self.sent_order - confirmed
            await self.redispatch()

    async def redispatch(self) -> bool:
        """Send the connection to another worker as a resumed connect (same reply channel,
        ``order`` continuing); hold the client's frames until its accept. False (and the socket
        closed 1013) if the connect could not be sent. No answer within the reply deadline
        closes it 1013 too (``websocket_resume_timeouts``)."""
        self.ctx.affinity.unlist(self)
        self.owner = None
        draining = self.draining_from is not None
        self.handover = Handover.HANDING_BACK if draining else Handover.RESUMING
        self.order += 1
        self.start_order = self.sent_order = self.confirmed_order = self.order
        scope = self.ctx.scope_to_wire(self.scope)
        scope["resumed"] = True
        self.stats.websocket_redispatched += 1
        timeout = self.ctx.settings.http_timeout_seconds or self.ctx.affinity.heartbeat_timeout
        connect: Message = {
            "type": "websocket.connect",
            "reply_channel": self.reply_channel,
            "control_channel": self.ctx.affinity.control_channel,
            "scope": scope,
            "order": self.order,
            **self.ctx.affinity.stamp(timeout),
        }
        if self.resumed_from is not None:
            connect["resumed_from"] = self.resumed_from
        elif self.consumer_channel is not None:  # the owner was lost, not handed back
            connect["lost_from"] = self.consumer_channel
        self.consumer_channel = None
        self.timeout_in(timeout)
        try:
            await self.layer.send(WEBSOCKET_CONNECT_CHANNEL, connect)
        except ChannelFull:
            # a burst of resumes (a worker with many connections gone): this one waits for
            # room, in the background, so the others are re-dispatched meanwhile
            self.ctx.affinity.spawn(self._resend_connect(connect))
            return True
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not re-dispatch %s: %r", self.reply_channel, exc)
            await self._close_1013(Outcome.LOST)
            return False
        self.sent_to(WEBSOCKET_CONNECT_CHANNEL)
        return True

    async def _resend_connect(self, connect: Message) -> None:
        """Retry a resumed connect that found ``websocket.connect`` full (``ProtocolSends``)
        while the connection still waits for it; closed 1013 if it could not be sent."""
        order = connect["order"]

        def wanted() -> bool:
            return self.resuming and not self.closing and self.start_order == order

        try:
            sent = await self.ctx.protocol.send(
                self.layer.send, WEBSOCKET_CONNECT_CHANNEL, connect, wanted
            )
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not re-dispatch %s: %r", self.reply_channel, exc)
            sent = False
        if sent:
            if wanted():
                self.sent_to(WEBSOCKET_CONNECT_CHANNEL)
        elif wanted():
            await self._close_1013(Outcome.LOST)

    async def hand_back(self, message: Message) -> bool:
        """The owner stops: it drains (serves what it was sent, stays in its groups) while the
        connection is resumed elsewhere; False if the socket had to be closed."""
        old = self.owner
        assert old is not None
        self.stats.websocket_handbacks += 1
        channel = message.get("channel")
        self.resumed_from = None
        if isinstance(channel, str) and is_process_specific(channel) and _is_channel_name(channel):
            self.resumed_from = channel  # the old consumer's: its successor cuts over from it
        self.draining_from = old
        self.handover = Handover.HANDING_BACK  # the client's frames are held from now on
        self.drain_end_order = self.order
        end = {"type": HANDBACK_END_EVENT, "reply_channel": self.reply_channel, "order": self.order}
        await self.send_quietly(old, end)
        return await self.redispatch()

    async def _end_drain(self, order: Any = None) -> bool:
        """The old owner is done (``order``: the last client frame its app took; None: it did
        not say in time): let out the new owner's output, then the held frames."""
        self.draining_from = None
        self.resumed_from = None
        if self.handover is Handover.HANDING_BACK:
            self.handover = Handover.RESUMING
        if isinstance(order, int) and order < self.drain_end_order:
            self.stats.websocket_frames_maybe_lost += self.drain_end_order - order
        output, self.held_output = self.held_output, []
        for message in output:
            await self.send(message)
        if self.resuming:  # not accepted yet: the accept lets the frames out
            return True
        self.no_timeout()
        return await self._release_held()

    async def _release_held(self) -> bool:
        """The new owner may have the client's frames: the held ones, in order, then the client
        side sends straight to it again."""
        held = self.held
        send = self.layer.send
        index = 0
        self.handover = Handover.RELEASING
        try:
            while index < len(held):  # the client side may append while we send
                await send(self.owner or WEBSOCKET_RECEIVE_CHANNEL, held[index])
                self.sent_order = held[index]["order"]
                self.stats.websocket_messages += 1
                index += 1
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not forward held WebSocket messages: %r", exc)
            await self._close_1013(Outcome.LOST)
            return False
        finally:
            if self.handover is Handover.RELEASING:  # (not re-dispatched meanwhile)
                self.handover = Handover.STEADY
        self.held = []
        return True

    async def _close_1013(self, reason: Outcome, why: str | None = None) -> None:
        """Close the client 1013 and send the disconnect (from outside the client side;
        ``why``: the disconnect's ``reason``)."""
        self._stop_forwarding()
        self.handover = Handover.STEADY
        self.draining_from = None
        self.held = []
        self.held_output = []
        if self.stop is None:
            self.stop = reason
        with contextlib.suppress(OSError):  # the client is gone (ASGI)
            await self.send({"type": "websocket.close", "code": 1013})
        self.interrupt(reason)
        await self._disconnected(1013, why)

    def _closed_slow(self, disconnect: Message) -> bool:
        """True if ``disconnect`` says the server closed the client 1013 rather than hold more
        of its output unread (``WS_OUTPUT_LIMIT_EXTENSION`` in the scope: the bound); counted
        and logged then (``SlowClients``). The worker gets that disconnect, so its consumer ends
        and leaves its groups."""
        limit = (self.scope.get("extensions") or {}).get(WS_OUTPUT_LIMIT_EXTENSION)
        if limit is None or (
            disconnect.get("code"),
            disconnect.get("reason"),
        ) != (WS_TOO_SLOW_DISCONNECT["code"], WS_TOO_SLOW_DISCONNECT["reason"]):
            return False
        self.ctx.slow_clients.closed(self.scope.get("client"), limit.get("bytes"))
        return True

    async def _deny(self, reason: bytes) -> None:
        """Refuse the handshake with a 503 (plain close where the denial extension is absent)."""
        try:
            if "websocket.http.response" in (self.scope.get("extensions") or {}):
                await self.send(
                    {"type": "websocket.http.response.start", "status": 503, "headers": TEXT_PLAIN}
                )
                await self.send({"type": "websocket.http.response.body", "body": reason})
            else:
                await self.send({"type": "websocket.close", "code": 1013})
        except OSError:  # the client is gone (ASGI: send raises an OSError then)
            pass

    async def _disconnected(self, code: int, reason: str | None = None) -> None:
        """Send the connection's one ``websocket.disconnect`` (-> ``Phase.DISCONNECTED``)."""
        if self.phase is Phase.DISCONNECTED:
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
        self.phase = Phase.DISCONNECTED
        self.stats.websocket_disconnects += 1
        if self.owner is None and (self.resuming or not self.accepted) and not self.refused:
            # no worker answered yet: its answer may still come (_linger)
            self.unanswered_disconnect = message
        await self.send_quietly(self.owner or WEBSOCKET_DISCONNECT_CHANNEL, message)

    async def _linger(self, disconnect: Message) -> None:
        """The client left before a worker answered its connect (or resumed connect): on the
        shared disconnect channel the notice reached any worker, maybe not the one whose app
        will answer. Wait a little for that answer; an accept names its owner, which gets the
        disconnect, so its instance ends rather than wait forever."""
        try:
            async with asyncio.timeout(self.ctx.affinity.heartbeat_timeout):
                while True:
                    message = await self.layer.receive(self.reply_channel)
                    kind = message.get("type")
                    if kind == "websocket.accept":
                        owner = message.get("owner")
                        if isinstance(owner, str) and _is_channel_name(owner):
                            await self.send_quietly(owner, disconnect)
                        return
                    if kind in ("websocket.close", "websocket.http.response.start"):
                        return
        except (TimeoutError, ChannelLayerError, OSError):
            return

    async def run(self) -> None:
        first = await self.receive()
        if first["type"] != "websocket.connect":
            return
        control_channel = await self.open()
        if control_channel is None:
            self.stats.websocket_503_layer += 1
            await self._deny(b"Service Unavailable: the channel layer is unreachable")
            return
        affinity = self.ctx.affinity
        affinity.add(self)
        try:
            await self._forward(control_channel)
        finally:
            affinity.remove(self)
        if self.unanswered_disconnect is not None:
            affinity.spawn(self._linger(self.unanswered_disconnect))

    async def _forward(self, control_channel: str) -> None:
        if not await self._send_connect(control_channel):
            return
        client_side = asyncio.get_running_loop().create_task(self._client_side())
        reason = await self._replies(client_side)
        if self.stop is not None or reason is Outcome.GONE:
            if self.stop is Outcome.LOST:
                client_side.cancel()  # closed 1013 from here
            else:
                # the client side ended it, or will: its ``receive`` has the disconnect (a
                # client gone, or closed by the server, as for a slow one) and passes it on
                self._stop_forwarding()
                await client_side
            return
        client_side.cancel()
        if reason is Outcome.TIMEOUT:
            self.stats.websocket_503_timeout += 1
            await self._deny(b"Service Unavailable: no answer in time")
        await self._disconnected(self.close_code if reason is Outcome.CLOSED else _ABNORMAL_CLOSE)

    async def _send_connect(self, control_channel: str) -> bool:
        """The connect to ``websocket.connect``; False if it could not go (the client denied
        a 503)."""
        stats = self.stats
        try:
            await self.layer.send(
                WEBSOCKET_CONNECT_CHANNEL,
                {
                    "type": "websocket.connect",
                    "reply_channel": self.reply_channel,
                    "control_channel": control_channel,
                    "scope": self.ctx.scope_to_wire(self.scope),
                    "order": 0,
                    **self.ctx.affinity.stamp(self.ctx.settings.http_timeout_seconds),
                },
            )
        except ChannelFull:
            stats.websocket_503_full += 1
            await self._deny(b"Service Unavailable: the server is overloaded")
            return False
        except (ChannelLayerError, OSError) as exc:
            logger.warning("Could not forward a WebSocket connect to the channel layer: %r", exc)
            stats.websocket_503_layer += 1
            await self._deny(b"Service Unavailable: the channel layer is unreachable")
            return False
        stats.websocket_connects += 1
        self.sent_to(WEBSOCKET_CONNECT_CHANNEL)
        return True

    async def _replies(self, client_side: asyncio.Task[None]) -> Outcome:
        """Reply loops until the exchange is over: one, and one more after each deadline that
        only ended a wait of the handover (``_overdue``)."""
        timeout: float | bool | None = True
        while True:
            try:
                reason = await self.reply_loop(timeout)
            except (ChannelLayerError, OSError) as exc:  # reading the reply channel
                logger.warning("Could not receive from the channel layer: %r", exc)
                if not self.accepted:
                    self.stats.websocket_503_layer += 1
                    await self._deny(b"Service Unavailable: the channel layer is unreachable")
                return Outcome.LAYER
            except Exception as exc:  # the server refused a reply (ASGI: send raised)
                logger.warning("Invalid reply on %s: %r", self.reply_channel, exc)
                if self.stop is None:
                    client_side.cancel()
                    await self._disconnected(1011 if self.accepted else _ABNORMAL_CLOSE)
                raise  # the server closes 1011 (or answers 500 to the handshake)
            if reason is not Outcome.TIMEOUT or self.stop is not None or not self.accepted:
                return reason
            if not await self._overdue():
                return self.stop or Outcome.GONE
            timeout = None

    async def _overdue(self) -> bool:
        """The deadline passed while the connection moved between workers: no successor
        answered (closed 1013), or the old owner of a handback did not say it was done (its
        successor's output is let out). False if the exchange is over."""
        if self.resuming:
            self.stats.websocket_resume_timeouts += 1
            logger.warning("No worker resumed %s in time: closed 1013", self.reply_channel)
            await self._close_1013(Outcome.LOST)
            return False
        self.stats.websocket_handback_timeouts += 1
        logger.warning(
            "%s did not release %s in time: its successor's output is let out",
            self.draining_from,
            self.reply_channel,
        )
        try:
            return await self._end_drain()
        except OSError:  # writing the successor's output: the client is gone (ASGI)
            return False

    def _repeated(self, worker: str, seq: int) -> bool:
        """A ``websocket.send`` of ``worker`` whose ``seq`` was seen already: sent twice
        because a layer outage cut its first send short (it had been stored after all)."""
        seen = self.output_seqs
        if seq <= seen.get(worker, 0):
            logger.debug("Dropped output %d of %s: a repeat", seq, self.reply_channel)
            return True
        if worker not in seen and len(seen) >= 2:  # the current and a draining owner
            keep = (self.owner, self.draining_from)
            self.output_seqs = seen = {w: n for w, n in seen.items() if w in keep}
        seen[worker] = seq
        return False

    async def handle(self, message: Message) -> Outcome | None:
        kind = message.get("type")
        if kind == "websocket.send":
            return await self._on_output(message)
        if kind == "websocket.accept":
            return await self._on_accept(message)
        if kind == HANDBACK_EVENT:
            return await self._on_handback(message)
        if kind == RELEASED_EVENT:
            if self.draining_from is not None and message.get("worker") == self.draining_from:
                return None if await self._end_drain(message.get("order")) else Outcome.LOST
            return None
        if kind == "websocket.close":
            return await self._on_close(message)
        if kind == "websocket.http.response.start":
            self.refused = True
            self.no_timeout()
            await self.send(message)
            return None
        await self.send(message)
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            self._stop_forwarding()
            return Outcome.CLOSED
        return None

    async def _on_output(self, message: Message) -> Outcome | None:
        """A ``websocket.send``: written out, unless it is not the owner's, a repeat, or the
        new owner's while the old one drains (held)."""
        tag = message.pop("owner", None)
        seq = message.pop("seq", None)
        draining_from = self.draining_from
        if (
            isinstance(tag, str)
            and tag != self.owner
            and tag != draining_from
            and (self.owner is not None or self.resuming)
        ):
            # a worker that is no longer the owner (declared gone while alive, its
            # connection resumed elsewhere): its output would be a second voice
            self.stats.websocket_output_not_owner += 1
            logger.debug("Dropped output of %s from %s: not its owner", self.reply_channel, tag)
            return None
        if isinstance(tag, str):
            self.ctx.affinity.heard_from(tag)  # a sign of life, read in inbox order
            if type(seq) is int and self._repeated(tag, seq):
                return None
        if draining_from is not None and tag is not None and tag != draining_from:
            self.held_output.append(message)  # the new owner's: after the old one's
            if len(self.held_output) < HELD_OUTPUT_MAX:
                return None
            self.stats.websocket_handback_timeouts += 1
            return None if await self._end_drain() else Outcome.LOST
        await self.send(message)
        return None

    async def _on_accept(self, message: Message) -> Outcome | None:
        """A ``websocket.accept``: its ``owner`` is where later events go; a resumed connect's
        accept lets the held frames out (the client was accepted already)."""
        owner = message.pop("owner", None)  # a towpath key: where later events go
        if isinstance(owner, str) and is_process_specific(owner) and _is_channel_name(owner):
            self.owner = owner
        elif owner is not None:
            logger.debug("Ignored owner %r of %s: not a process channel", owner, self.reply_channel)
        if self.owner is not None:
            self.ctx.affinity.adopt(self, self.owner)
        consumer = message.pop("consumer", None)
        if (
            isinstance(consumer, str)
            and is_process_specific(consumer)
            and _is_channel_name(consumer)
        ):
            self.consumer_channel = consumer
        if self.resuming:  # the client is accepted already: only the owner changes
            if self.handover is Handover.HANDING_BACK:  # the old owner has this long to finish
                self.handover = Handover.DRAINING
                self.timeout_in(self.ctx.affinity.heartbeat_timeout)
                return None
            self.no_timeout()
            return None if await self._release_held() else Outcome.LOST
        self.no_timeout()
        await self.send(message)
        self.accepted = True
        return None

    async def _on_handback(self, message: Message) -> Outcome | None:
        """``towpath.handback`` from the owner of an open, not holding connection."""
        if (
            self.accepted
            and not self.closing
            and not self.holding
            and self.owner is not None
            and message.get("worker") == self.owner
        ):
            return None if await self.hand_back(message) else Outcome.LOST
        logger.debug("Ignored a handback of %s: %r", self.reply_channel, message)
        return None

    async def _on_close(self, message: Message) -> Outcome:
        """A ``websocket.close``: the new owner's held output first, then the close."""
        self._stop_forwarding()
        self.refused = self.refused or self.owner is None
        self.handover = Handover.STEADY
        self.draining_from = None
        output, self.held_output = self.held_output, []
        for event in output:  # the new owner's output before its close
            await self.send(event)
        await self.send(message)
        if self.accepted:
            self.close_code = message.get("code") or 1000
        return Outcome.CLOSED

    async def _send_frame(
        self, send: Callable[[str, Message], Awaitable[None]], event: Message
    ) -> None:
        """Send a client frame to the owner (or the shared channel); raises what the last
        attempt raised. Around a layer outage (``docs/affinity.md``, "A layer outage"):

        * a send the layer failed on other than ``ChannelFull`` (the connection to its server
          broke: the frame may or may not have been stored) is sent once more to an owner,
          which waits for the layer's server to be back; the owner drops a frame whose
          ``order`` it had already, so the frame arrives once;
        * a full channel while the layer is just back from an outage is the owner not reading
          yet (it reconnects too): the frame waits, with back-off, until workers are judged
          again (``Affinity.judging``), instead of closing the client 1013 at once."""
        owner = self.owner
        recovering = self.ctx.affinity.recovering
        try:
            await send_patiently(send, owner or WEBSOCKET_RECEIVE_CHANNEL, event, recovering)
        except ChannelFull:
            raise
        except (ChannelLayerError, OSError) as exc:
            if owner is None:  # the shared channel: another worker could take it twice
                raise
            logger.info("Sending frame %d of %s again: %r", self.order, self.reply_channel, exc)
            await send_patiently(send, owner, event, recovering)

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
                if self.phase is not Phase.FORWARDING:  # closing
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
                if self.holding:
                    self.held.append(event)
                    if len(self.held) > HELD_FRAMES_MAX:
                        stats.websocket_1013_held_overflow += 1
                        self.stop = Outcome.FULL
                        await self._close_1013(Outcome.FULL)
                        return
                    continue
                try:
                    await self._send_frame(send, event)
                    self.sent_order = self.order
                except (ChannelLayerError, OSError) as exc:
                    if isinstance(exc, ChannelFull):
                        stats.websocket_1013 += 1
                    else:
                        logger.warning("Could not forward a WebSocket message: %r", exc)
                    self._stop_forwarding()
                    self.stop = Outcome.FULL
                    with contextlib.suppress(OSError):  # the client is gone (ASGI)
                        await self.send({"type": "websocket.close", "code": 1013})
                    self.interrupt(Outcome.FULL)
                    await self._disconnected(1013)
                    return
                stats.websocket_messages += 1
            elif kind == "websocket.disconnect":
                reason = Outcome.SLOW if self._closed_slow(message) else Outcome.GONE
                self.interrupt(reason)
                await self._disconnected(message.get("code", 1005), message.get("reason"))
                return


def _is_channel_name(channel: str) -> bool:
    """True for a valid channel name (an owner that is not one is ignored)."""
    try:
        require_valid_channel_name(channel)
    except TypeError:
        return False
    return True
