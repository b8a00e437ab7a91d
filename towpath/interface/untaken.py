"""Requests no worker takes: a half-started stack says so instead of waiting in silence.

A request sent to a shared channel (``http.request``, ``websocket.connect``, a resumed connect)
is *taken* once something proves a worker has it: a heartbeat listing its reply channel
(``docs/protocol.md`` section 10) or an answer on that reply channel. One still untaken
``threshold`` seconds after it was sent is *untaken* (counted once in ``untaken_requests``).
What that means depends on what else the server sees:

* no worker is working on anything of this server (none listed a connection) and none took or
  finished answering anything for ``threshold`` seconds: **no worker is taking requests**
  (none is running, or it is on another channel layer). One WARNING per outage naming the
  channels and the fix (``no_worker_outages``); the first request taken after it ends the
  outage with an INFO line.
* workers are working on other requests of this server, or answered one lately: the requests
  **wait** in the layer (workers busy at their ``--concurrency``, or none routes that channel).
  One WARNING per episode (``waiting_episodes``), and an INFO line once nothing has been
  waiting longer than ``threshold`` any more.

:class:`UntakenRequests` is the bookkeeping, with an injectable clock (``check`` is what a
timer calls); the forwarding app's exchanges feed it (:meth:`sent`, :meth:`taken`,
:meth:`dropped`, :meth:`listed`) and it arms its own timer on the running event loop, only
while something waits. Cost per request: one dict entry while it waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["UntakenRequests"]

logger = logging.getLogger("towpath.interface.forwarding")

#: the watcher's states
_OK, _WAITING, _NO_WORKER = "ok", "waiting", "no worker"


class UntakenRequests:
    """Which sent requests no worker has taken yet, and what the server says about them.

    ``stats`` gets ``untaken_requests``, ``no_worker_outages`` and ``waiting_episodes`` added
    to; ``threshold``: seconds a request may wait untaken; ``clock``: seconds, monotonic
    (default: the running loop's); ``fix``: how to start a worker, as the warning says it.
    """

    __slots__ = (
        "_clock",
        "_handle",
        "_last_seen",
        "_outage_requests",
        "_outage_since",
        "_state",
        "_waiting",
        "fix",
        "period",
        "stats",
        "threshold",
        "working",
    )

    def __init__(
        self,
        stats: Any,
        threshold: float,
        *,
        clock: Callable[[], float] | None = None,
        fix: str = "start `towpath runworker` with the same settings",
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, not {threshold!r}")
        self.stats = stats
        self.threshold = threshold
        self.fix = fix
        #: how often the timer looks while something waits
        self.period = min(threshold / 4, 0.5)
        #: connections a worker listed in a heartbeat and that are still live here
        self.working = 0
        self._clock = clock
        #: waiting request -> [sent at, channel, counted as untaken]; in the order sent
        self._waiting: dict[Hashable, list[Any]] = {}
        self._last_seen: float | None = None
        self._state = _OK
        self._outage_since = 0.0
        self._outage_requests = 0
        self._handle: asyncio.TimerHandle | None = None

    def now(self) -> float:
        clock = self._clock
        return clock() if clock is not None else asyncio.get_running_loop().time()

    @property
    def waiting(self) -> int:
        """Requests sent that no worker has taken yet."""
        return len(self._waiting)

    @property
    def state(self) -> str:
        """``"ok"``, ``"waiting"`` (requests wait while workers are busy) or ``"no worker"``."""
        return self._state

    # -- what the exchanges report -------------------------------------------------------------

    def sent(self, request: Hashable, channel: str) -> None:
        """``request`` was sent to the shared ``channel``: a worker should take it."""
        self._waiting.pop(request, None)  # sent again (a resumed connect): waits from now
        self._waiting[request] = [self.now(), channel, False]
        self._arm()

    def taken(self, request: Hashable) -> None:
        """A worker answered ``request`` or listed it in a heartbeat."""
        entry = self._waiting.pop(request, None)
        if entry is None:
            return
        now = self.now()
        self._last_seen = now
        if self._state == _NO_WORKER:
            self._state = _OK
            logger.info(
                "a worker took a request from %s: requests are being served again (none was "
                "taken for %.1f s; %d still waiting)",
                entry[1],
                now - self._outage_since,
                len(self._waiting),
            )
            self._arm()

    def answered(self) -> None:
        """A worker finished an answer: it is alive (and may take the next request now)."""
        self._last_seen = self.now()

    def dropped(self, request: Hashable) -> None:
        """``request`` ended before a worker took it (the client left, it timed out)."""
        self._waiting.pop(request, None)

    def listed(self, delta: int) -> None:
        """A connection was listed by a worker (``+1``) or no longer is (``-1``)."""
        self.working += delta

    # -- the timer -------------------------------------------------------------------------------

    def check(self) -> None:
        """Count the requests waiting longer than ``threshold`` and log what it means."""
        now = self.now()
        deadline = now - self.threshold
        late: dict[str, int] = {}
        oldest = None
        fresh = 0
        for entry in self._waiting.values():
            sent_at, channel, counted = entry
            if sent_at > deadline:
                break  # the rest were sent later
            if oldest is None:
                oldest = sent_at
            late[channel] = late.get(channel, 0) + 1
            if not counted:
                entry[2] = True
                fresh += 1
        self.stats.untaken_requests += fresh
        self._outage_requests += fresh
        if oldest is None:
            if self._state == _WAITING:
                self._state = _OK
                logger.info(
                    "requests are taken again within %.3g s (%d waiting)",
                    self.threshold,
                    len(self._waiting),
                )
            return
        count = sum(late.values())
        channels = ", ".join(f"{channel}: {n}" for channel, n in sorted(late.items()))
        busy = self.working > 0 or (self._last_seen is not None and self._last_seen > deadline)
        if not busy and self._state != _NO_WORKER:
            self._state = _NO_WORKER
            self._outage_since = oldest
            self._outage_requests = count
            self.stats.no_worker_outages += 1
            logger.warning(
                "no worker is taking requests: %d waited more than %.3g s (%s) and no worker "
                "took anything from this server meanwhile; %s, or check that the workers use "
                "the same channel layer and are not busy elsewhere",
                count,
                self.threshold,
                channels,
                self.fix,
            )
        elif busy and self._state == _OK:
            self._state = _WAITING
            self.stats.waiting_episodes += 1
            logger.warning(
                "requests are waiting: %d not yet taken by a worker after %.3g s (%s; the "
                "oldest for %.1f s) while workers work on %d other(s) here; add workers or "
                "raise their --concurrency, or check that a worker routes these channels",
                count,
                self.threshold,
                channels,
                now - oldest,
                self.working,
            )
        elif fresh and self._state == _NO_WORKER:
            logger.debug(
                "still no worker: %d request(s) not taken after %.3g s in this outage (%s now)",
                self._outage_requests,
                self.threshold,
                channels,
            )

    def close(self) -> None:
        """Stop the timer (lifespan shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self._handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # driven by hand (tests call check())
        self._handle = loop.call_later(self.period, self._tick)

    def _tick(self) -> None:
        self._handle = None
        try:
            self.check()
        except Exception:
            logger.exception("Checking for untaken requests failed")
        if self._waiting or self._state == _WAITING:
            self._arm()
