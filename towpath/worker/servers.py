"""What a worker knows of the interface servers that send it work: alive, or gone.

Every ``http.request`` and ``websocket.connect`` of a current interface server carries its
control channel, ``heartbeat_timeout`` (which also says that the server answers heartbeats),
``sent_at`` and, when it gives up on the message, ``deadline`` (``docs/protocol.md``, section
10). A worker heart-beats to each server it has connections on; the server answers each
heartbeat with ``towpath.heartbeat.ack``. So:

* a message whose ``deadline`` passed is one its server already answered itself (503): it is
  dropped, never started (:attr:`Verdict.LATE`);
* a server that has not answered a heartbeat for its ``heartbeat_timeout`` is *gone*: its
  connections are ended and its messages dropped (:attr:`Verdict.GONE`). That is while the
  worker stops, or while work waits for the server's answer; the rest of the time a running
  worker waits ``RUNNING_PATIENCE`` times as long, since ending the sockets of a server that is
  merely slow (a loaded machine) costs their clients the messages of the resume, while keeping
  a dead server's instances a little longer costs nothing but memory;
* a message that waited in the layer longer than that timeout, from a server not heard from
  lately, may be a stopped server's: the worker asks the server first (one heartbeat) and starts
  it only on the answer (:attr:`Verdict.PROBE`).

Clocks: ``deadline`` and ``sent_at`` are the server's wall clock. Each ack carries the server's
time, from which the worker keeps the offset between the two clocks; before a server's first
ack the worker assumes they agree, as the layers' ``expiry`` always does. Being alive is judged
on this process's monotonic clock alone: a heartbeat sent, an answer or none within the
timeout. A heartbeat round that itself ran late (a stalled event loop, a layer slow to take
the sends) blames no server: every pending question starts again. Nor does a layer outage:
while the worker's own layer connection is down it cannot hear any server, so no server is
judged until its timeout plus ``RECONNECT_GRACE`` after the layer is back (``outage_seen``).

Sans-IO: no layer, no tasks; the clocks are injectable (:class:`Servers`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from towpath.layers.outages import RECONNECT_GRACE

__all__ = ["Server", "Servers", "Verdict"]

#: a server unseen this long, with nothing of it here, is forgotten
FORGET_SECONDS = 600.0
#: a running worker (not stopping, no work waiting on the server) judges a silent server gone
#: after this many times its ``heartbeat_timeout``
RUNNING_PATIENCE = 3.0


class Verdict(enum.Enum):
    """What to do with a new ``http.request`` or ``websocket.connect``."""

    #: start it
    START = "start"
    #: its server gave up on it (deadline passed): drop it
    LATE = "late"
    #: its server is gone: drop it
    GONE = "gone"
    #: ask its server first; start it if it answers within its timeout
    PROBE = "probe"


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


@dataclass(eq=False)
class Server:
    """One interface server, known by its control channel."""

    control: str
    #: its ``heartbeat_timeout``: silence that long means gone (None: a server that does not
    #: answer heartbeats, older than this protocol: never judged)
    timeout: float | None
    #: its wall clock minus this process's, from its last ack (0 before the first)
    offset: float = 0.0
    #: monotonic time of its last ack (None: never)
    heard: float | None = None
    #: monotonic time the oldest heartbeat it has not answered was sent (None: none pending)
    asked: float | None = None
    gone: bool = False
    #: a heartbeat must go to it now (a probe), not at the next interval
    probe: bool = False
    #: start work waiting for its answer: True (answered) or False (gone)
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    #: monotonic time it was last useful (an ack, a message): for forgetting it
    seen: float = 0.0
    #: said in the log already: a late message of it; its loss
    late_logged: bool = False
    gone_logged: bool = False

    def alive_within(self, now: float) -> bool:
        """Answered a heartbeat within its timeout."""
        timeout = self.timeout
        return timeout is not None and self.heard is not None and now - self.heard < timeout


class Servers:
    """The interface servers this worker has heard of. ``clock``: monotonic seconds (the
    event loop's); ``wall``: seconds since the epoch (``time.time``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._servers: dict[str, Server] = {}

    def get(self, control: str | None) -> Server | None:
        return self._servers.get(control) if control is not None else None

    def admit(self, message: dict[str, Any]) -> tuple[Verdict, Server | None]:
        """The verdict on a new request or connect, and its server (None without a control
        channel). A server that says nothing of heartbeats (older than this protocol) is
        never judged: its messages start unless their deadline passed."""
        control = message.get("control_channel")
        deadline = _number(message.get("deadline"))
        if not isinstance(control, str):
            late = deadline is not None and self.wall() > deadline
            return (Verdict.LATE if late else Verdict.START), None
        timeout = _number(message.get("heartbeat_timeout"))
        if timeout is not None and timeout <= 0:
            timeout = None
        now = self.clock()
        server = self._servers.get(control)
        if server is None:
            server = self._servers[control] = Server(control, timeout)
        server.timeout = timeout
        server.seen = now
        server_now = self.wall() + server.offset
        if deadline is not None and server_now > deadline:
            return Verdict.LATE, server
        if timeout is None:
            return Verdict.START, server
        sent_at = _number(message.get("sent_at"))
        fresh = sent_at is not None and server_now - sent_at < timeout
        if server.gone:
            # a fresh message of a server found gone: maybe it was only slow; ask it again
            return (Verdict.PROBE if fresh else Verdict.GONE), server
        if fresh or server.alive_within(now):
            return Verdict.START, server
        return Verdict.PROBE, server

    def ask(self, server: Server) -> asyncio.Future[bool]:
        """A future resolved True when ``server`` answers, False when it is found gone; a
        heartbeat must go to it now (:meth:`probes`)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        server.waiters.append(waiter)
        server.gone = False
        if server.asked is None:
            server.probe = True
        return waiter

    @property
    def probing(self) -> bool:
        """Some server must be asked now (:meth:`probes`)."""
        return any(server.probe for server in self._servers.values())

    def probes(self) -> list[Server]:
        """The servers a heartbeat must go to now; they are taken as sent."""
        wanted = [server for server in self._servers.values() if server.probe]
        for server in wanted:
            server.probe = False
        return wanted

    def sent(self, control: str, ok: bool) -> None:
        """A heartbeat to ``control`` was taken by the layer (``ok``) or refused."""
        server = self._servers.get(control)
        if server is None or server.timeout is None:
            return
        if not ok:
            server.asked = None  # not asked at all: the layer is at fault, not the server
        elif server.asked is None:
            server.asked = self.clock()

    def acked(self, control: str, message: dict[str, Any]) -> Server | None:
        """``towpath.heartbeat.ack`` from ``control``: the server is alive."""
        server = self._servers.get(control)
        if server is None:
            return None
        now = self.clock()
        server.heard = server.seen = now
        server.asked = None
        server.gone = False
        their_time = _number(message.get("time"))
        if their_time is not None:
            server.offset = their_time - self.wall()
        self._resolve(server, True)
        return server

    def sweep(
        self, lag: float = 0.0, *, stopping: bool = True, outage_seen: float | None = None
    ) -> list[Server]:
        """The servers found gone now: asked, and no answer within their timeout (times
        ``RUNNING_PATIENCE`` unless ``stopping`` or work waits on the answer). ``lag``: how late
        this check runs (the event loop stalled, or the layer took long to take the
        heartbeats); answers may be waiting unread, so no server is blamed for that time.
        ``outage_seen``: when (this clock) the worker's layer was last seen unreachable, or
        just back from an outage; no server is blamed until that timeout plus
        ``RECONNECT_GRACE`` after it (the worker could not hear anyone meanwhile)."""
        now = self.clock()
        gone: list[Server] = []
        for control, server in list(self._servers.items()):
            asked, timeout = server.asked, server.timeout
            if asked is not None and timeout is not None:
                asked = server.asked = min(now, asked + lag)
                if not (stopping or server.waiters):
                    timeout *= RUNNING_PATIENCE
                if outage_seen is not None and now - outage_seen <= timeout + RECONNECT_GRACE:
                    continue
                if now - asked > timeout:
                    server.asked = None
                    server.gone = True
                    gone.append(server)
                    self._resolve(server, False)
            elif (
                not server.waiters and now - max(server.seen, server.heard or 0.0) > FORGET_SECONDS
            ):
                del self._servers[control]
        return gone

    @staticmethod
    def _resolve(server: Server, answer: bool) -> None:
        waiters, server.waiters = server.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(answer)
