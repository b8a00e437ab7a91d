"""The worker's slow-client policy: a hosted WebSocket's output waits while its reply channel
is full, up to a bound, then that one client is closed 1013 (``docs/worker.md``).

A reply channel is full when the interface server does not read it fast enough: its client
reads slowly (or not at all), or the server is briefly stalled. ``SendWait.send`` retries the
send with jittered exponential back-off (no busy loop) until it goes through or ``timeout``
seconds passed; the consumer's handler waits meanwhile, so a briefly slow client slows its
consumer instead of killing it. Past the bound the caller closes the client 1013 ("try again
later") on the server's control channel, which is not the full reply channel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from towpath.layers.base import BaseChannelLayer, ChannelFull

__all__ = ["SEND_STATS", "SendWait", "WarnEvery"]

logger = logging.getLogger("towpath.worker")

#: the worker's counters about slow clients (``Worker.stats``): ``send_waits``: sends that
#: found a reply channel full and waited; ``slow_clients_closed``: clients closed 1013 after
#: waiting ``send_timeout`` (or after ``max_pending`` frames queued for a stuck consumer);
#: ``pending_overflows``: of those, closed for the queued frames; ``sends_dropped_closed``:
#: output an instance sent after its client was closed that way (dropped, the instance gets
#: its disconnect next); ``closes_via_control``: closes sent on the server's control channel
#: because the reply channel stayed full; ``closes_failed``: closes that got through nowhere
SEND_STATS = (
    "send_waits",
    "slow_clients_closed",
    "pending_overflows",
    "sends_dropped_closed",
    "closes_via_control",
    "closes_failed",
)


class WarnEvery:
    """Log at WARNING at most once per ``interval`` seconds (an episode), with the count of
    the occurrences in between; the rest at DEBUG."""

    __slots__ = ("_clock", "_next", "_skipped", "interval")

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self._skipped = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._skipped += 1
            logger.debug(message, *args)
            return
        skipped, self._skipped = self._skipped, 0
        self._next = now + self.interval
        if skipped:
            message += " (and %d more like it since the last such line)"
            args = (*args, skipped)
        logger.warning(message, *args)


class SendWait:
    """Send to a channel that may be full: wait with jittered back-off up to ``timeout``.

    ``clock``, ``sleep`` and ``jitter`` are injectable (tests); ``stats`` is the worker's
    counters dict (``send_waits`` is counted here)."""

    __slots__ = ("clock", "initial", "jitter", "maximum", "sleep", "stats", "timeout", "warn")

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        initial: float = 0.01,
        maximum: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.timeout = timeout
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.stats: dict[str, int] = stats if stats is not None else dict.fromkeys(SEND_STATS, 0)
        for name in SEND_STATS:
            self.stats.setdefault(name, 0)
        self.warn = WarnEvery(clock=clock)

    async def send(
        self,
        layer: BaseChannelLayer,
        channel: str,
        message: dict[str, Any],
        bound: float | None = None,
    ) -> bool:
        """Send ``message``; True once sent, False when ``channel`` stayed full for
        ``bound`` (default: this policy's ``timeout``) seconds. Other layer errors propagate."""
        try:
            await layer.send(channel, message)
            return True
        except ChannelFull:
            pass
        self.stats["send_waits"] += 1
        deadline = self.clock() + (self.timeout if bound is None else bound)
        delay = self.initial
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            # full jitter around the back-off: the waiting senders do not retry in step
            await self.sleep(min(remaining, delay * (0.5 + self.jitter())))
            delay = min(delay * 2, self.maximum)
            try:
                await layer.send(channel, message)
                return True
            except ChannelFull:
                continue
