"""Protocol sends: the messages the wire protocol itself needs are retried, never dropped.

A disconnect notice (``websocket.disconnect``, ``http.disconnect``), a resumed
``websocket.connect``, ``towpath.handback.end`` and a heartbeat ack are not the application's
output: losing one leaks a consumer's groups, closes a client that did nothing wrong, or makes
a worker think its server is gone. So a ``ChannelFull`` on one of them is back-pressure, not an
answer: :class:`ProtocolSends` tries again with jittered exponential back-off (10 ms doubling to
0.5 s, each pause between half and 1.5 times that) until it goes through or
``protocol_send_timeout`` seconds have passed since the first attempt. Only then is the
message given up (``protocol_sends_failed``, logged at WARNING). The first full channel of an
*episode* (a channel with sends waiting, until none wait) is logged at WARNING once, naming the
channel; every delayed send counts in ``protocol_sends_delayed``. Other layer errors are not
retried here (the caller knows what they mean). ``docs/protocol.md``, "Back-pressure".

The clock and the sleep are injectable so tests can drive the deadline without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from towpath.layers.backoff import Backoff
from towpath.layers.base import ChannelFull, ChannelLayerError

__all__ = ["DEFAULT_PROTOCOL_SEND_TIMEOUT", "ProtocolSends"]

logger = logging.getLogger("towpath.interface.forwarding")

#: seconds a protocol message is retried on a full channel before it is given up
DEFAULT_PROTOCOL_SEND_TIMEOUT = 30.0
#: the first pause and the longest one between attempts (before jitter)
_FIRST_DELAY = 0.01
_MAX_DELAY = 0.5

Message = dict[str, Any]
LayerSend = Callable[[str, Message], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class _Counters(Protocol):
    protocol_sends_delayed: int
    protocol_sends_failed: int


class ProtocolSends:
    """Send protocol messages with back-off on ``ChannelFull`` up to ``timeout`` seconds."""

    __slots__ = ("_clock", "_random", "_sleep", "_waiting", "stats", "timeout")

    def __init__(
        self,
        stats: _Counters,
        timeout: float = DEFAULT_PROTOCOL_SEND_TIMEOUT,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"protocol_send_timeout must be > 0, not {timeout!r}")
        self.stats = stats
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._random = rand or random.random
        #: channel -> sends waiting for it now (an episode lasts while this is above 0)
        self._waiting: dict[str, int] = {}

    def waiting(self, channel: str) -> int:
        """Sends to ``channel`` waiting for room now."""
        return self._waiting.get(channel, 0)

    async def send(
        self,
        send: LayerSend,
        channel: str,
        message: Message,
        wanted: Callable[[], bool] | None = None,
    ) -> bool:
        """Send ``message`` to ``channel`` with ``send`` (the layer's); on ``ChannelFull``
        retry until it goes through (True) or the deadline passes (False, logged) or
        ``wanted()`` says it is no longer needed (False, not logged). Other errors propagate
        at once."""
        try:
            await send(channel, message)
            return True
        except ChannelFull:
            pass
        return await self._retry(send, channel, message, wanted)

    async def send_or_spawn(
        self, send: LayerSend, channel: str, message: Message, spawn: Spawn
    ) -> None:
        """Like :meth:`send`, but when the channel is full the retries run in a task that
        ``spawn`` starts, so the caller goes on at once (a heartbeat ack must not hold up the
        control channel's reader). Other errors of the first attempt propagate."""
        try:
            await send(channel, message)
        except ChannelFull:
            spawn(self._retry_quietly(send, channel, message))

    async def _retry_quietly(self, send: LayerSend, channel: str, message: Message) -> None:
        try:
            await self._retry(send, channel, message)
        except (ChannelLayerError, OSError) as exc:
            logger.debug("Could not send %s to %s: %r", message.get("type"), channel, exc)

    async def _retry(
        self,
        send: LayerSend,
        channel: str,
        message: Message,
        wanted: Callable[[], bool] | None = None,
    ) -> bool:
        clock = self._clock or asyncio.get_running_loop().time
        deadline = clock() + self.timeout
        stats = self.stats
        stats.protocol_sends_delayed += 1
        waiting = self._waiting
        if channel not in waiting:
            waiting[channel] = 0
            logger.warning(
                "Channel %s is full: protocol messages to it (%s) wait and are retried for up "
                "to %.3g s (protocol_send_timeout); logged once until it takes them again",
                channel,
                message.get("type"),
                self.timeout,
            )
        waiting[channel] += 1
        backoff = Backoff(_FIRST_DELAY, _MAX_DELAY, self._random)
        sent = abandoned = False
        try:
            while True:
                left = deadline - clock()
                if left <= 0:
                    break
                await self._sleep(backoff.pause(left))
                if wanted is not None and not wanted():
                    abandoned = True
                    break
                try:
                    await send(channel, message)
                except ChannelFull:
                    continue
                sent = True
                break
        finally:
            waiting[channel] -= 1
            if not waiting[channel]:
                del waiting[channel]
                if sent:
                    logger.info("Channel %s takes protocol messages again", channel)
        if not sent and not abandoned:
            stats.protocol_sends_failed += 1
            logger.warning(
                "Gave up a %s to %s: the channel stayed full for %.3g s (protocol_send_timeout)",
                message.get("type"),
                channel,
                self.timeout,
            )
        return sent
