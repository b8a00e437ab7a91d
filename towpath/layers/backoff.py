"""Waiting for room in a full channel: jittered exponential back-off, shared by every sender
that treats ``ChannelFull`` as back-pressure rather than as an answer.

A full channel is a reader that is behind; it takes messages again as soon as it catches up.
So a sender that must not lose its message (a protocol message of the interface server, a
worker's output, a ``group_send`` to a member that is reading) tries again after a pause that
starts short and doubles up to a cap, each pause drawn between half and one and a half times
the nominal one, so that many senders waiting for the same reader do not retry in step.

:func:`send_when_room` is the loop; what ends the waiting (a deadline, the connection ending,
the member leaving its group) is the caller's ``keep_trying``. The sleep and the random draw
are injectable so tests can drive it without waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from towpath.layers.base import ChannelFull

__all__ = ["Backoff", "send_when_room"]

#: the first pause and the longest one (before jitter), in seconds
FIRST_PAUSE = 0.01
LONGEST_PAUSE = 0.5


class Backoff:
    """The pauses between attempts: ``first`` doubling up to ``longest``, jittered."""

    __slots__ = ("_delay", "_random", "longest")

    def __init__(
        self,
        first: float = FIRST_PAUSE,
        longest: float = LONGEST_PAUSE,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._delay = first
        self.longest = longest
        self._random = rand

    def pause(self, at_most: float | None = None) -> float:
        """The next pause (never above ``at_most``, when given)."""
        delay = self._delay
        self._delay = min(delay * 2, self.longest)
        pause = delay * (0.5 + self._random())
        return pause if at_most is None else max(0.0, min(pause, at_most))


async def send_when_room(
    send: Callable[[str, dict[str, Any]], Awaitable[None]],
    channel: str,
    message: dict[str, Any],
    keep_trying: Callable[[], bool],
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> bool:
    """``send(channel, message)``, tried again after a back-off pause for as long as the
    channel is full and ``keep_trying()`` is true. True once it went through; False when
    ``keep_trying()`` said stop (the message was not sent). Errors other than
    ``ChannelFull`` propagate at once."""
    while True:
        try:
            await send(channel, message)
            return True
        except ChannelFull:
            if not keep_trying():
                return False
        if backoff is None:  # made on the first full channel: most sends never need one
            backoff = Backoff()
        await sleep(backoff.pause())
        if not keep_trying():
            return False
