"""Connection affinity, the interface server's half: the control channel and heartbeats.

Each :class:`~towpath.interface.forwarding.ForwardingApp` has one process channel of its own,
the *control channel*, named in every ``http.request`` and ``websocket.connect`` it sends.
Workers send ``towpath.heartbeat`` messages there, each listing the reply channels of the
connections the worker is working on (HTTP) or owns (WebSocket). :class:`Affinity` remembers
when it last heard from each worker and, per live connection, which worker listed it last; a
worker silent for ``heartbeat_timeout`` seconds is *gone* and each connection it listed is told
so (``owner_lost``): an HTTP request is answered 503 (or reset), a WebSocket is re-dispatched
to another worker as a resumed connect. ``docs/protocol.md`` section 10 is the protocol.

Silence is judged only while the server's own layer connection works: while the layer is
unreachable no worker is declared gone (its heartbeats are lost or waiting, not missing), and
after the layer is back each worker has ``heartbeat_timeout`` plus the layers' reconnect grace
to be heard from again (:class:`~towpath.layers.outages.OutageWatch`).

Cost: one dict entry per live connection (its reply channel), one attribute per connection
(``listed_by``); heartbeats cost per worker per interval, never per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from towpath.layers.base import ChannelLayerError, is_process_specific, require_valid_channel_name
from towpath.layers.outages import RECONNECT_GRACE, OutageWatch
from towpath.wire import HEARTBEAT_ACK_EVENT, HEARTBEAT_EVENT

if TYPE_CHECKING:
    from towpath.interface.delivery import ProtocolSends
    from towpath.interface.forwarding.stats import ForwardingStats
    from towpath.layers.base import BaseChannelLayer

__all__ = ["Affinity"]

#: the name it had before the forwarding package: log filters keep working
logger = logging.getLogger("towpath.interface.affinity")


class Tracked(Protocol):
    """What :class:`Affinity` needs of a live connection (the forwarding app's exchanges)."""

    reply_channel: str
    #: the worker whose heartbeat listed this connection last, or None
    listed_by: str | None

    def may_list(self, worker: str) -> bool:
        """May ``worker`` claim this connection (a WebSocket: only its owner)?"""

    async def owner_lost(self, worker: str) -> None:
        """The worker that listed this connection last is gone."""

    def confirm(self, order: int) -> None:
        """The worker's app took this connection's client frames up to ``order``."""

    def draining_alive(self, worker: str) -> None:
        """``worker`` handed this connection back and is still finishing with it."""


class Affinity:
    """The control channel of one forwarding app: its reader and the gone-worker sweep."""

    __slots__ = (
        "_background",
        "_connections",
        "_judging",
        "_last_beat",
        "_last_heard",
        "_listed",
        "_stalling",
        "_tasks",
        "_watch",
        "clock",
        "control_channel",
        "heartbeat_timeout",
        "layer",
        "protocol",
        "stats",
    )

    def __init__(
        self,
        layer: BaseChannelLayer,
        stats: ForwardingStats,
        heartbeat_timeout: float,
        *,
        protocol: ProtocolSends,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.layer = layer
        #: the clock workers are judged by (monotonic seconds); None: the event loop's. Tests
        #: give their own and move it instead of waiting
        self.clock = clock
        self.stats = stats
        #: how heartbeat acks are sent (a full channel retried: ``towpath.interface.delivery``)
        self.protocol = protocol
        self.heartbeat_timeout = heartbeat_timeout
        #: the control channel's name; None until :meth:`start`
        self.control_channel: str | None = None
        #: live connections by reply channel
        self._connections: dict[str, Tracked] = {}
        #: worker process channel -> loop time it was last heard from (a heartbeat, or its
        #: output read: :meth:`heard_from`); what the sweep judges
        self._last_heard: dict[str, float] = {}
        #: worker process channel -> loop time its last heartbeat was read (the gap statistic)
        self._last_beat: dict[str, float] = {}
        #: worker process channel -> reply channels it listed last
        self._listed: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: short-lived work that outlives a connection (a late answer awaited): cancelled by stop
        self._background: set[asyncio.Task[None]] = set()
        #: the layer's outages: no worker is judged by its silence during one and just after
        self._watch = OutageWatch(layer)
        #: the sweep's last wake-up was late too (a run of stalls)
        self._stalling = False
        #: the last sweep judged workers (False: the layer was unreachable, said once)
        self._judging = True

    async def start(self) -> str:
        """Make the control channel (no I/O) and start reading it; idempotent."""
        if self.control_channel is None:
            self.control_channel = await self.layer.new_channel("interface")
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read(self.control_channel)),
                loop.create_task(self._sweep()),
            ]
        return self.control_channel

    def now(self) -> float:
        """The judging clock's time (:attr:`clock`)."""
        clock = self.clock
        return clock() if clock is not None else asyncio.get_running_loop().time()

    def stamp(self, timeout: float | None) -> dict[str, Any]:
        """The keys every ``http.request`` and ``websocket.connect`` carries for the worker
        that takes it: when it was sent, when this server gives up on it (``timeout`` seconds
        on: it answers 503 then; absent without one), both on this server's wall clock, and
        ``heartbeat_timeout`` (this server answers heartbeats; silence that long means it is
        gone). ``docs/protocol.md``, section 10."""
        now = time.time()
        keys: dict[str, Any] = {"sent_at": now, "heartbeat_timeout": self.heartbeat_timeout}
        if timeout is not None:
            keys["deadline"] = now + timeout
        return keys

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background until it ends or :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Stop reading the control channel (lifespan shutdown, tests)."""
        tasks, self._tasks = [*self._tasks, *self._background], []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- live connections ---------------------------------------------------------------

    def add(self, connection: Tracked) -> None:
        self._connections[connection.reply_channel] = connection

    def remove(self, connection: Tracked) -> None:
        self._connections.pop(connection.reply_channel, None)
        self.unlist(connection)

    def adopt(self, connection: Tracked, worker: str) -> None:
        """``worker`` accepted ``connection``: it is listed as the owner's at once, so a worker
        that dies before its first heartbeat is still found gone after ``heartbeat_timeout``."""
        if connection.listed_by != worker:
            self._list(connection, worker, self._listed.setdefault(worker, set()))
        self._last_heard.setdefault(worker, self.now())

    def _list(self, connection: Tracked, worker: str, listed: set[str]) -> None:
        """``worker`` (whose listed set is ``listed``) is now the one that listed it last."""
        self.unlist(connection)
        connection.listed_by = worker
        listed.add(connection.reply_channel)

    def unlist(self, connection: Tracked) -> None:
        """Forget which worker listed ``connection`` (it was re-dispatched or ended)."""
        worker = connection.listed_by
        if worker is not None:
            connection.listed_by = None
            listed = self._listed.get(worker)
            if listed is not None:
                listed.discard(connection.reply_channel)

    # -- the control channel ------------------------------------------------------------

    async def _read(self, channel: str) -> None:
        receive = self.layer.receive
        delay = 0.05
        while True:
            try:
                message = await receive(channel)
            except (ChannelLayerError, OSError) as exc:
                logger.warning("Could not read the control channel: %r", exc)
                self._watch.saw(self.now())  # no heartbeat gets through
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if message.get("type") == HEARTBEAT_EVENT:
                unknown = self.heartbeat(message)
                if unknown is not None:
                    await self._ack(message["worker"], unknown)
            else:
                logger.debug("Ignored %r on the control channel", message.get("type"))

    def heartbeat(self, message: dict[str, Any]) -> list[str] | None:
        """A worker is alive and works on (or owns) the connections it lists. Returns the
        listed reply channels this server no longer holds (None: a malformed heartbeat)."""
        worker = message.get("worker")
        connections = message.get("connections")
        if not isinstance(worker, str) or not isinstance(connections, list | tuple):
            logger.debug("Ignored a malformed heartbeat: %r", message)
            return None
        now = self.now()
        last = self._last_beat.get(worker)
        self._last_beat[worker] = self._last_heard[worker] = now
        if last is not None:
            gap = int((now - last) * 1000)
            stats = self.stats
            if gap > stats.heartbeat_gap_max_ms:
                stats.heartbeat_gap_max_ms = gap
        listed = self._listed.setdefault(worker, set())
        live = self._connections
        orders = message.get("orders")
        if not isinstance(orders, dict):
            orders = {}
        unknown: list[str] = []
        for reply_channel in connections:
            if not isinstance(reply_channel, str):
                continue
            connection = live.get(reply_channel)
            if connection is None:
                unknown.append(reply_channel)
                continue
            order = orders.get(reply_channel)
            if isinstance(order, int) and connection.may_list(worker):
                connection.confirm(order)
            if connection.listed_by == worker:
                continue
            if not connection.may_list(worker):
                continue
            self._list(connection, worker, listed)
        draining = message.get("draining")
        if isinstance(draining, list | tuple):
            for reply_channel in draining:
                connection = live.get(reply_channel) if isinstance(reply_channel, str) else None
                if connection is not None:
                    connection.draining_alive(worker)
        return unknown

    async def _ack(self, worker: str, unknown: list[str]) -> None:
        """Answer a heartbeat on the worker's process channel: this server lives (its wall
        clock, for the worker's view of deadlines), and the listed connections it no longer
        holds (``unknown``), which the worker ends."""
        if not is_process_specific(worker):
            return
        ack: dict[str, Any] = {
            "type": HEARTBEAT_ACK_EVENT,
            "control_channel": self.control_channel,
            "time": time.time(),
        }
        if unknown:
            ack["unknown"] = unknown
        try:
            require_valid_channel_name(worker)
            await self.protocol.send_or_spawn(self.layer.send, worker, ack, self.spawn)
        except (ChannelLayerError, OSError, TypeError) as exc:
            logger.debug("Could not answer the heartbeat of %s: %r", worker, exc)

    async def _sweep(self) -> None:
        """Every quarter ``heartbeat_timeout`` (half a second at most): note a stall of this
        server, then :meth:`sweep`."""
        period = min(self.heartbeat_timeout / 4, 0.5)
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()  # after the last round's own work, which is no stall
            await asyncio.sleep(period)
            # a stall is the event loop not running: measured on its clock
            self.stalled(loop.time() - asked - period)
            await self.sweep(self.now())

    async def sweep(self, now: float) -> None:
        """Declare gone every worker not heard from for ``heartbeat_timeout`` seconds at
        ``now`` (:meth:`now`), unless the layer was unreachable meanwhile (:meth:`judging`)."""
        timeout = self.heartbeat_timeout
        if not self.judging(now):
            if self._judging:
                self._judging = False
                logger.warning(
                    "The channel layer is unreachable: no worker is declared gone for "
                    "missing heartbeats until it is back and %.3g s more",
                    timeout + RECONNECT_GRACE,
                )
            return
        if not self._judging:
            self._judging = True
            logger.info("Workers are judged by their heartbeats again")
        deadline = now - timeout
        for worker in [w for w, heard in self._last_heard.items() if heard < deadline]:
            await self.worker_gone(worker)

    def stalled(self, overshoot: float) -> bool:
        """The sweep woke ``overshoot`` seconds later than it asked (loop time, monotonic):
        past half a second, or a quarter of ``heartbeat_timeout`` if less, this server was
        itself stalled (stopped, a long GC or CPU stall, a blocked loop) and read nothing
        meanwhile. The workers' silence during the stall is not held against them: each one's
        last heartbeat moves on by the stall, plus ``heartbeat_timeout`` / 2 at the first stall
        of a run of them, so the heartbeats waiting in the inbox are read before anyone is
        judged (a loop lagging at every sweep still judges: only its lag is credited). True if
        it was a stall."""
        if overshoot <= min(0.5, self.heartbeat_timeout / 4):
            self._stalling = False
            return False
        self.stats.server_stalls += 1
        first = not self._stalling
        credit = overshoot + self.heartbeat_timeout / 2 if first else overshoot
        self._stalling = True
        heard = self._last_heard
        for worker in heard:
            heard[worker] += credit
        (logger.warning if first else logger.debug)(
            "This server was stalled for %.2f s (its loop did not run): no worker is judged by "
            "heartbeats it could not read; each gets %.2f s more",
            overshoot,
            credit,
        )
        return True

    def judging(self, now: float) -> bool:
        """May a worker's silence be judged at ``now`` (loop time)? Not while this server's
        layer is unreachable (it cannot hear anyone, alive or not) and not until
        ``heartbeat_timeout`` plus ``RECONNECT_GRACE`` seconds after it is back: every worker
        gets a fresh timeout from the recovery (its own connection may come back up to one
        back-off pause later, and its heartbeats sent meanwhile were lost or wait)."""
        self._watch.look(now)
        return self._watch.settled(now, self.heartbeat_timeout)

    def recovering(self) -> bool:
        """The layer was unreachable lately (:meth:`judging` is false now): a full channel may
        be its reader still reconnecting."""
        return not self.judging(self.now())

    def heard_from(self, worker: str) -> None:
        """Output ``worker`` sent was read: it was alive when it sent it, no earlier than any
        heartbeat of its queued before that output in this server's inbox. A server that
        reads its inbox late (a burst of output ahead of the heartbeats) does not hold its own
        lag against a worker whose heartbeats wait behind that worker's output. Only a worker
        already known here counts (its heartbeats still say which connections it holds)."""
        heard = self._last_heard
        if worker in heard:
            heard[worker] = self.now()

    async def worker_gone(self, worker: str) -> None:
        """Tell each connection ``worker`` listed last that its worker is gone."""
        self._last_heard.pop(worker, None)
        self._last_beat.pop(worker, None)
        listed = self._listed.pop(worker, set())
        orphans = [
            connection
            for reply_channel in listed
            if (connection := self._connections.get(reply_channel)) is not None
            and connection.listed_by == worker
        ]
        if not orphans:
            return  # it had nothing left here: it stopped heart-beating, it is not lost
        stats = self.stats
        stats.workers_lost += 1
        maybe_lost = stats.websocket_frames_maybe_lost
        for connection in orphans:
            connection.listed_by = None
            try:
                await connection.owner_lost(worker)
            except Exception:
                logger.exception("Handling the loss of %s failed", connection.reply_channel)
        logger.warning(
            "Worker %s not heard from for %.1f s: it is gone (%d connection(s) answered or "
            "re-dispatched; at most %d client frame(s) sent to it were lost)",
            worker,
            self.heartbeat_timeout,
            len(orphans),
            stats.websocket_frames_maybe_lost - maybe_lost,
        )
