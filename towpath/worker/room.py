"""A full reply channel is back-pressure: the send waits for room, it never fails the app.

A reply channel is full when its interface server reads it more slowly than the worker writes
(a slow client's output piling up, a server busy or paused). Raising ``ChannelFull`` into the
app would kill a consumer over a pause its server recovers from, so every send the worker makes
for a connection (a WebSocket's output, accept and close; an HTTP response) waits for room with
:func:`~towpath.layers.backoff.send_when_room`, for as long as the connection is still this
worker's. What ends the wait is never this worker's own clock: the send goes through, the
connection ends (its client left; its server is judged gone by the heartbeats or says it no
longer holds it: the host's ``abandon()``), or the worker stops waiting (:attr:`ReplyRoom.cut`:
a forced stop, or the graceful timeout over). ``docs/worker.md``, "A full reply channel".

The episodes are logged per interface server (the part of the channel name up to its ``!``,
which names the server's inbox): one WARNING when a send to it first finds a channel full, one
INFO when it takes messages again (a send went through at once, and none had to wait for
``QUIET`` seconds: a reader that stays behind, or catches up channel by channel, makes one
episode, not a line per message), or when the last sends waiting on it ended with their
connections. ``sends_delayed`` counts the sends that waited. The clock serves these lines only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from towpath.layers.backoff import send_when_room

__all__ = ["QUIET", "SEND_STATS", "ReplyRoom", "server_of"]

logger = logging.getLogger("towpath.worker")

#: the worker's counters about full reply channels (``Worker.stats``)
SEND_STATS = ("sends_delayed",)
#: seconds without a send waiting on a server before a send that goes through at once ends
#: its episode (a full channel sooner than that is the same episode)
QUIET = 1.0

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


def server_of(channel: str) -> str:
    """The interface server a reply channel belongs to: its name up to the ``!`` (the
    server's inbox, ``interface.<client-id>!``); a normal channel is its own."""
    inbox, bang, _ = channel.partition("!")
    return inbox + bang


@dataclass(eq=False)
class _Episode:
    """Sends waiting for room in one server's reply channels."""

    #: the clock when the first of them found a channel full
    since: float
    #: the clock when a send last began or ended waiting
    last: float
    #: how many wait now; how many waited in all; how many of those went through
    waiting: int = 0
    waited: int = 0
    delivered: int = 0


class ReplyRoom:
    """One worker's waits for room in full reply channels. ``stats``: where ``sends_delayed``
    is counted (the worker's counters); ``clock``: monotonic seconds, for the log lines."""

    __slots__ = ("_clock", "_episodes", "cut", "stats")

    def __init__(
        self, stats: dict[str, int] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stats = stats if stats is not None else dict.fromkeys(SEND_STATS, 0)
        self._clock = clock
        #: set when the worker stops waiting (a forced stop, or its graceful timeout over):
        #: each waiting send ends at its next attempt, and a send that finds its channel full
        #: from then on does not wait
        self.cut = False
        self._episodes: dict[str, _Episode] = {}

    @property
    def waiting(self) -> int:
        """Sends waiting for room now."""
        return sum(episode.waiting for episode in self._episodes.values())

    async def send(
        self, send: Send, channel: str, message: dict[str, Any], ours: Callable[[], bool]
    ) -> bool:
        """``send(channel, message)``; while the channel is full, again after a back-off
        pause for as long as ``ours()`` (the connection is still this worker's) and the
        worker has not cut its waits. True once sent; False when the wait ended first (the
        message was not sent). Errors other than ``ChannelFull`` propagate."""
        episode: _Episode | None = None

        def keep_trying() -> bool:
            nonlocal episode
            going_on = ours() and not self.cut
            if going_on and episode is None:
                episode = self._begin(server_of(channel))
            return going_on

        sent = False
        try:
            sent = await send_when_room(send, channel, message, keep_trying)
        finally:
            if episode is not None:
                self._waited(server_of(channel), episode, sent)
            elif sent and self._episodes:
                self._room_again(server_of(channel))
        return sent

    def _begin(self, server: str) -> _Episode:
        self.stats["sends_delayed"] += 1
        now = self._clock()
        episode = self._episodes.get(server)
        if episode is not None and not episode.waiting and now - episode.last >= QUIET:
            self._over(server, episode)  # it took messages meanwhile: a new episode
            episode = None
        if episode is None:
            episode = self._episodes[server] = _Episode(now, now)
            logger.warning(
                "The reply channels of interface server %s are full (it reads more slowly "
                "than this worker writes, or it is stopped): sends to them wait for room, and "
                "their consumers with them; counted in sends_delayed",
                server,
            )
        episode.last = now
        episode.waiting += 1
        episode.waited += 1
        return episode

    def _waited(self, server: str, episode: _Episode, sent: bool) -> None:
        """A send that waited is done. The last one not going through (its connection ended)
        ends the episode; else a send that needs no wait will (:meth:`_room_again`)."""
        episode.last = self._clock()
        episode.waiting -= 1
        episode.delivered += sent
        if episode.waiting or sent:
            return
        if self._episodes.get(server) is episode:
            del self._episodes[server]
        logger.info(
            "The last of %d send(s) waiting for room in the reply channels of interface server "
            "%s ended with its connection after %.3g s (%d went through; the server is gone, or "
            "no longer holds the connections, or this worker stops)",
            episode.waited,
            server,
            episode.last - episode.since,
            episode.delivered,
        )

    def _room_again(self, server: str) -> None:
        """A send to ``server`` went through at once: its episode is over if no send has
        waited there for ``QUIET`` seconds."""
        episode = self._episodes.get(server)
        now = self._clock()
        if episode is not None and not episode.waiting and now - episode.last >= QUIET:
            self._over(server, episode)

    def _over(self, server: str, episode: _Episode) -> None:
        if self._episodes.get(server) is episode:
            del self._episodes[server]
        logger.info(
            "Interface server %s takes messages again: %d send(s) had waited for room in its "
            "reply channels (%d went through) over %.3g s",
            server,
            episode.waited,
            episode.delivered,
            episode.last - episode.since,
        )
