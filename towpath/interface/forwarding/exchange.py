"""What the forwarding app's HTTP and WebSocket exchanges share: the reply loop.

:class:`_Exchange` is one connection being forwarded: the app's task runs its reply loop, and a
second task (the client side) stops that loop by moving its ``asyncio.timeout`` deadline to
now. The channel names and events are :mod:`towpath.wire`'s (``docs/protocol.md`` in code).

The forwarding app is a plain ASGI app: a client gone shows as an ``OSError`` from ``send``,
as ASGI specifies, and the reply loop tells it apart from the layer's own errors by where it
came from (writing a reply out, not reading the reply channel): the loop ends ``Outcome.GONE``
and the client side's ``receive`` has the disconnect (code and reason) to pass on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.interface.forwarding.context import ExchangeContext
from towpath.interface.forwarding.outcome import Outcome
from towpath.layers.base import ChannelLayerError
from towpath.wire import HANDBACK_EVENT, RELEASED_EVENT

__all__: list[str] = []

logger = logging.getLogger("towpath.interface.forwarding")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: replies that do not show that a worker took a (resumed) connect: output of a WebSocket's
#: previous owner while it drains, and its handback words
_NOT_AN_ANSWER = frozenset({"websocket.send", HANDBACK_EVENT, RELEASED_EVENT})


class _Exchange:
    """What HTTP and WebSocket forwarding share: the reply loop and how it is stopped."""

    __slots__ = (
        "_deadline",
        "_in_reply_loop",
        "_listed_by",
        "ctx",
        "layer",
        "receive",
        "reply_channel",
        "scope",
        "send",
        "stats",
        "stop",
        "waiting_for_worker",
    )

    def __init__(
        self, ctx: ExchangeContext, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        self.ctx = ctx
        self.layer = ctx.layer
        self.stats = ctx.stats
        self.scope = scope
        self.receive = receive
        self.send = send
        self.reply_channel = ""
        #: why the reply loop must stop (set by the client side before waking it), or None
        self.stop: Outcome | None = None
        self._deadline: asyncio.Timeout | None = None
        self._in_reply_loop = False
        self._listed_by: str | None = None
        #: sent to a shared channel, and no worker has shown it took it yet
        #: (``towpath.interface.untaken``)
        self.waiting_for_worker = False

    @property
    def listed_by(self) -> str | None:
        """The worker whose heartbeat listed this connection last (``Affinity``)."""
        return self._listed_by

    @listed_by.setter
    def listed_by(self, worker: str | None) -> None:
        old, self._listed_by = self._listed_by, worker
        if (old is None) != (worker is None):
            self.ctx.untaken.listed(-1 if worker is None else 1)
        if worker is not None and self.waiting_for_worker:
            self.taken()

    def sent_to(self, channel: str) -> None:
        """The request (or connect) went to the shared ``channel``: a worker should take it."""
        self.waiting_for_worker = True
        self.ctx.untaken.sent(self, channel)

    def taken(self) -> None:
        """A worker showed it has this request (an answer, a heartbeat listing it)."""
        self.waiting_for_worker = False
        self.ctx.untaken.taken(self)

    async def open(self) -> str | None:
        """Make this connection's reply channel (and the app's control channel, the first
        time): the control channel's name, or None when the layer failed (logged)."""
        try:
            control_channel = await self.ctx.control_channel()
            self.reply_channel = await self.layer.new_channel("interface")
        except (ChannelLayerError, OSError) as exc:
            self.ctx.layer_failed("Could not make a reply channel", exc)
            return None
        return control_channel

    def may_list(self, worker: str) -> bool:
        return True

    async def owner_lost(self, worker: str) -> None:
        self.interrupt(Outcome.WORKER_LOST)

    def draining_alive(self, worker: str) -> None:
        """A heartbeat says ``worker`` still finishes with this connection (WebSocket
        handbacks; nothing to do for HTTP)."""
        return

    def confirm(self, order: int) -> None:
        """A heartbeat said the worker's app took this connection's frames up to ``order``
        (WebSocket loss accounting; nothing to do for HTTP)."""
        return

    def interrupt(self, reason: Outcome) -> None:
        """Stop the reply loop now (from the client-side task)."""
        if self.stop is None:
            self.stop = reason
        deadline = self._deadline
        if self._in_reply_loop and deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    def no_timeout(self) -> None:
        """The answer started: the rest may take as long as it takes."""
        self.timeout_in(None)

    def timeout_in(self, seconds: float | None) -> None:
        """Move the reply loop's deadline to ``seconds`` from now (``None``: no deadline)."""
        deadline = self._deadline
        if self._in_reply_loop and deadline is not None and not deadline.expired():
            when = None if seconds is None else asyncio.get_running_loop().time() + seconds
            deadline.reschedule(when)

    async def reply_loop(self, first_deadline: float | bool | None = True) -> Outcome:
        """Write out every message of the reply channel until ``handle`` says the exchange is
        over (its reason is returned), the deadline passes (``Outcome.TIMEOUT``) or the client side
        interrupts (its reason). ``first_deadline``: seconds to the deadline (``True``: the
        settings' ``http_timeout_seconds``; ``None``: none); :meth:`timeout_in` moves it."""
        timeout = (
            self.ctx.settings.http_timeout_seconds if first_deadline is True else first_deadline
        )
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
                    message = await layer_receive(channel)
                    if self.waiting_for_worker and message.get("type") not in _NOT_AN_ANSWER:
                        self.taken()
                    try:
                        done = await handle(message)
                    except ChannelLayerError:
                        raise
                    except OSError as exc:  # from the client's send (ASGI): it is gone
                        logger.debug("Client of %s gone: %r", channel, exc)
                        return Outcome.GONE
                    if done is not None:
                        return done
        except TimeoutError:
            return self.stop or Outcome.TIMEOUT
        finally:
            self._in_reply_loop = False
            if self.waiting_for_worker:  # it ended unanswered (timed out, client gone)
                self.waiting_for_worker = False
                self.ctx.untaken.dropped(self)

    async def handle(self, message: Message) -> Outcome | None:
        raise NotImplementedError

    async def send_quietly(
        self, channel: str, message: Message, *, background: bool = False
    ) -> bool:
        """Send a protocol message (a disconnect notice, a handback end) where a failure
        changes nothing we could do: a full channel is waited for (``ProtocolSends``, up to
        ``protocol_send_timeout_seconds``; ``background``: by a task of its own, this returns
        at once); False if it was not sent."""
        protocol = self.ctx.protocol
        try:
            if background:
                await protocol.send_or_spawn(
                    self.layer.send, channel, message, self.ctx.affinity.spawn
                )
                return True
            return await protocol.send(self.layer.send, channel, message)
        except (ChannelLayerError, OSError) as exc:
            logger.debug("Could not send %s to %s: %r", message.get("type"), channel, exc)
            return False
