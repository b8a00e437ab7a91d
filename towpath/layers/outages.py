"""Layer outages, as seen by a process that judges other processes by their silence.

``towpath serve`` declares a worker gone when its heartbeats stop; a worker declares a server
gone when its heartbeats go unanswered. Both hear the other only through the channel layer,
so while their own layer connection is down, silence says nothing about the other process:
its heartbeats are lost or waiting, not missing. :class:`OutageWatch` reads a layer's
reachability (:attr:`~towpath.layers.base.BaseChannelLayer.unreachable_since` and
:attr:`~towpath.layers.base.BaseChannelLayer.outages`) and tells its owner whether silence may
be judged now: not while the layer is unreachable, and not until ``timeout`` plus
:data:`RECONNECT_GRACE` seconds after it came back (``docs/affinity.md``, "A layer outage").

Sans-IO: the clock is the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from towpath.layers.backoff import Backoff
from towpath.layers.base import ChannelFull

__all__ = [
    "RECONNECT_BACKOFF_MAX",
    "RECONNECT_GRACE",
    "OutageWatch",
    "earliest_outage",
    "layer_outage",
    "outages_begun",
    "send_patiently",
]

#: the longest pause between two attempts of towpath's networked layers to reach a server
#: that is down (their back-off is exponential, with jitter, up to this)
RECONNECT_BACKOFF_MAX = 2.0
#: after an outage, what a process adds to its timeout before it judges another process by
#: its silence: the other may reconnect up to one back-off pause later than this one did
RECONNECT_GRACE = RECONNECT_BACKOFF_MAX


class _Log(Protocol):
    """What a networked layer's outage log keeps (one per server connection it dials)."""

    #: ``time.monotonic()`` start of its current outage; None: reachable
    since: float | None
    #: outages begun so far
    count: int


def earliest_outage(logs: Iterable[_Log]) -> float | None:
    """A layer's ``unreachable_since`` from its servers' outage logs."""
    return min((log.since for log in logs if log.since is not None), default=None)


def outages_begun(logs: Iterable[_Log]) -> int:
    """A layer's ``outages`` from its servers' outage logs."""
    return sum(log.count for log in logs)


def layer_outage(layer: Any) -> tuple[float | None, int]:
    """``(unreachable_since, outages)`` of ``layer``: ``(None, 0)`` for an object that does not
    say (a Django Channels layer passed to ``towpath serve``)."""
    since = getattr(layer, "unreachable_since", None)
    outages = getattr(layer, "outages", 0)
    return (
        since if isinstance(since, float | int) and not isinstance(since, bool) else None,
        outages if isinstance(outages, int) and not isinstance(outages, bool) else 0,
    )


class OutageWatch:
    """Whether a process may judge others by their silence over ``layer`` right now.

    Call :meth:`look` now and then (each sweep); it notes the last look that found the layer
    unreachable, or found that it had been (an outage that began and ended between two
    looks shows in the layer's ``outages`` count).
    """

    __slots__ = ("_down", "_outages", "last_seen", "layer")

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._down = False
        self._outages = layer_outage(layer)[1]
        #: the caller's clock at the last look that found the layer unreachable, or just
        #: back from an outage; None: no outage seen
        self.last_seen: float | None = None

    def look(self, now: float) -> bool:
        """Look at the layer at ``now`` (the caller's clock); True while it is unreachable."""
        since, outages = layer_outage(self.layer)
        down = since is not None
        if down or self._down or outages != self._outages:
            self.last_seen = now
        self._down, self._outages = down, outages
        return down

    def saw(self, now: float) -> None:
        """The caller found the layer failing by itself at ``now`` (a read that raised): as a
        look that found it down, for a layer that does not say (a Channels layer)."""
        self.last_seen = now

    def settled(self, now: float, timeout: float) -> bool:
        """True when silence of ``timeout`` seconds may be judged at ``now``: no look found
        the layer down (or back from an outage) within ``timeout + RECONNECT_GRACE``."""
        last = self.last_seen
        return last is None or now - last > timeout + RECONNECT_GRACE


async def send_patiently(
    send: Callable[[str, dict[str, Any]], Awaitable[None]],
    channel: str,
    message: dict[str, Any],
    recovering: Callable[[], bool],
) -> None:
    """``send(channel, message)``; a ``ChannelFull`` while ``recovering()`` (the layer was just
    unreachable: the channel's reader reconnects too, so the channel filling up says nothing
    about it) is tried again with back-off until the message goes through or ``recovering()``
    turns false, and then raised."""
    backoff = Backoff(longest=0.25)
    while True:
        try:
            await send(channel, message)
            return
        except ChannelFull:
            if not recovering():
                raise
        await asyncio.sleep(backoff.pause())
