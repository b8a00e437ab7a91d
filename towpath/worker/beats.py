"""A worker's side of the control channels: heartbeats out, acks in, and what follows when an
interface server is gone (``docs/protocol.md``, section 10).

Every ``heartbeat_interval`` the worker tells each interface server it has live connections
on which of them it holds (``towpath.heartbeat``); the server answers each heartbeat
(``towpath.heartbeat.ack``), naming the listed connections it no longer holds. A server that
has not answered for its ``heartbeat_timeout`` is gone: its WebSockets' instances get
``websocket.disconnect`` (1006) and leave their groups, its HTTP apps see ``http.disconnect``,
and a stopping worker waits for none of them. New work from a gone server, or work its server
already gave up on, is dropped before it starts (:mod:`towpath.worker.servers` decides). While
the worker's own layer is unreachable, and just after, no server is judged by its silence.

Heartbeats never queue behind the work: they go out on a fixed cadence (a slow round does not
push the next one back), every server's at once, and one that finds its server's control
channel full is sent again by a task of its own (with the newest listing) while the rounds go
on; the receive loops let them run between batches of messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine
from typing import Any

from towpath.layers.backoff import send_when_room
from towpath.layers.base import BaseChannelLayer, ChannelFull
from towpath.layers.outages import OutageWatch
from towpath.wire import HEARTBEAT_EVENT
from towpath.worker.host import HostedHTTP, HostedWebSocket, Message
from towpath.worker.servers import Server, Servers, Verdict

__all__ = ["Heartbeats", "Verdict"]

logger = logging.getLogger("towpath.worker")

#: early heartbeats (a request just taken) are at least this fraction of the heartbeat
#: interval apart: at most ten more heartbeats per interval however many requests come
EARLY_HEARTBEAT_SPACING = 0.1

#: the worker's counters about servers (``Worker.stats``)
SERVER_STATS = (
    "dropped_late",
    "dropped_server_gone",
    "ended_server_gone",
    "ended_unknown",
    "servers_lost",
)


class Heartbeats:
    """The heartbeat half of :class:`~towpath.worker.Worker` (a mixin: it uses the worker's
    connections, requests, stats and layer)."""

    layer: BaseChannelLayer
    process_channel: str
    heartbeat_interval: float
    stopping: bool
    connections: dict[str, HostedWebSocket]
    requests: dict[str, HostedHTTP]
    stats: dict[str, int]
    servers: Servers
    #: control channel by reply channel of the HTTP requests message consumers handle
    _http_consumers: dict[str, str]
    #: the tasks serving HTTP requests (ASGI apps and message consumers), by control channel
    _http_tasks: dict[asyncio.Task[None], str]
    _probing: asyncio.Task[None] | None
    #: control channels with an HTTP request taken and not listed yet; the task listing them
    _unlisted: set[str]
    _listing: asyncio.Task[None] | None
    #: loop time before which no early heartbeat goes out
    _next_early: float
    #: the tasks sending a heartbeat again to a full control channel, by control channel
    _beating: dict[str, asyncio.Task[None]]
    #: the heartbeat each of them sends (the newest for that server)
    _beats_pending: dict[str, Message]
    _outage_watch: OutageWatch

    # -- what to list ----------------------------------------------------------------------------

    def heartbeats(self) -> dict[str, list[str]]:
        """The live connections to list, by control channel: HTTP requests whose response is
        not complete, and WebSockets this worker owns."""
        live: dict[str, list[str]] = {}
        for reply_channel, consumer_control in self._http_consumers.items():
            live.setdefault(consumer_control, []).append(reply_channel)
        for reply_channel, host in self.requests.items():
            control = host.control_channel
            if control is not None and not host.complete and not host.disconnected:
                live.setdefault(control, []).append(reply_channel)
        for reply_channel, connection in self.connections.items():
            control = connection.control_channel
            if control is not None and connection.owned:
                live.setdefault(control, []).append(reply_channel)
        return live

    def frame_orders(self) -> dict[str, int]:
        """For each owned WebSocket, the ``order`` of the last client frame its app was done
        with (the heartbeat's ``orders``: what a server counts as handled if this worker
        dies; the frames after it are counted as possibly lost)."""
        return {
            reply_channel: connection.handled_order
            for reply_channel, connection in self.connections.items()
            if connection.owned
        }

    def draining(self) -> dict[str, list[str]]:
        """The WebSockets handed back whose instance still runs, by control channel: the
        heartbeat's ``draining`` (their server waits for them while this worker lives)."""
        draining: dict[str, list[str]] = {}
        for reply_channel, connection in self.connections.items():
            control = connection.control_channel
            if control is not None and connection.handed_back and not connection.lost:
                draining.setdefault(control, []).append(reply_channel)
        return draining

    # -- sending ---------------------------------------------------------------------------------

    async def send_heartbeats(
        self, probes_only: bool = False, listing: Collection[str] = ()
    ) -> None:
        """One heartbeat to each control channel this worker has live connections on, and to
        each server it must ask now (``probes_only``: to those alone, and to the control
        channels in ``listing``: requests just taken there)."""
        live, draining = self.heartbeats(), self.draining()
        probed = {server.control for server in self.servers.probes()}
        if probes_only:
            controls = probed | {control for control in listing if control in live}
        else:
            controls = live.keys() | draining.keys() | probed
        orders = self.frame_orders() if controls else {}
        beats = []
        for control in controls:
            connections = live.get(control, [])
            heartbeat: dict[str, Any] = {
                "type": HEARTBEAT_EVENT,
                "worker": self.process_channel,
                "connections": connections,
            }
            taken = {channel: orders[channel] for channel in connections if channel in orders}
            if taken:
                heartbeat["orders"] = taken
            if control in draining:
                heartbeat["draining"] = draining[control]
            beats.append(self._beat(control, heartbeat))
        # every server's at once: a slow one does not hold the others'
        await asyncio.gather(*beats)

    async def _beat(self, control: str, heartbeat: Message) -> None:
        """Send one heartbeat. A full control channel (its server reads late: it is asked,
        unanswered) is no reason to wait here: a task of its own sends it again when there is
        room (:meth:`_beat_again`); a heartbeat for that server meanwhile replaces it."""
        again = self._beating.get(control)
        if again is not None and not again.done():
            self._pending_beat(control, heartbeat)
            return
        try:
            await self.layer.send(control, heartbeat)
        except ChannelFull:
            self.stats["heartbeats_delayed"] += 1
            self.servers.sent(control, True)
            self._pending_beat(control, heartbeat)
            self._beating[control] = asyncio.get_running_loop().create_task(
                self._beat_again(control)
            )
        except Exception as exc:
            self.stats["heartbeats_failed"] += 1
            # the layer failed, which is no fault of the server's: it was not asked
            self.servers.sent(control, False)
            logger.debug("Could not send a heartbeat to %s: %r", control, exc)
        else:
            self.stats["heartbeats_sent"] += 1
            self.servers.sent(control, True)

    def _pending_beat(self, control: str, heartbeat: Message) -> None:
        """Make ``heartbeat`` the one :meth:`_beat_again` sends to ``control`` (the dict it
        sends is updated in place: its next attempt sends the newest listing)."""
        pending = self._beats_pending.setdefault(control, {})
        pending.clear()
        pending.update(heartbeat)

    async def _beat_again(self, control: str) -> None:
        """Send the pending heartbeat to ``control`` when its channel has room, until the
        server is found gone (the sweep, by its silence)."""

        def keep_trying() -> bool:
            server = self.servers.get(control)
            return server is None or not server.gone

        try:
            pending = self._beats_pending[control]
            if await send_when_room(self.layer.send, control, pending, keep_trying):
                self.stats["heartbeats_sent"] += 1
                self.servers.sent(control, True)
        except Exception as exc:
            self.stats["heartbeats_failed"] += 1
            logger.debug("Could not send a heartbeat to %s again: %r", control, exc)
        finally:
            self._beats_pending.pop(control, None)
            self._beating.pop(control, None)

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval
        due = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self.send_heartbeats()
            except Exception:
                logger.exception("Sending heartbeats failed")
            now = loop.time()
            # a layer outage: no server is judged by its silence during it and just after
            self._outage_watch.look(self.servers.clock())
            # how late this round ends (a stalled loop, a slow layer): acks may wait unread
            for server in self.servers.sweep(
                lag=max(0.0, now - due),
                stopping=self.stopping,
                outage_seen=self._outage_watch.last_seen,
            ):
                self._server_gone(server)
            # on a fixed cadence: a round that ran late does not push the next one back
            due = max(due + interval, now)

    def _list_soon(self, control: str | None) -> None:
        """An HTTP request from ``control`` was just taken: list it to its server now, not at
        the next interval, so that if this worker dies before answering, the server answers
        the client 503 once it finds the worker gone (a request no heartbeat listed would wait
        for ``--http-timeout``). Coalesced: the requests taken in one tick share a heartbeat,
        and early heartbeats are ``EARLY_HEARTBEAT_SPACING`` of the interval apart at least."""
        if control is None:
            return
        self._unlisted.add(control)
        if self._listing is None or self._listing.done():
            self._listing = asyncio.get_running_loop().create_task(self._send_early())

    async def _send_early(self) -> None:
        loop = asyncio.get_running_loop()
        while self._unlisted:
            # the other requests of this tick (or of the spacing) go in the same heartbeat
            await asyncio.sleep(max(0.0, self._next_early - loop.time()))
            controls, self._unlisted = self._unlisted, set()
            self._next_early = loop.time() + self.heartbeat_interval * EARLY_HEARTBEAT_SPACING
            try:
                await self.send_heartbeats(probes_only=True, listing=controls)
            except Exception:
                logger.exception("Sending early heartbeats failed")
            else:
                logger.debug("Early heartbeat to %s: request(s) just taken", ", ".join(controls))

    def _probe_soon(self) -> None:
        """Send the heartbeats that ask servers now, not at the next interval."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._send_probes())

    async def _send_probes(self) -> None:
        while self.servers.probing:
            await asyncio.sleep(0)  # the probes of this tick's messages go out together
            await self.send_heartbeats(probes_only=True)

    # -- answers ---------------------------------------------------------------------------------

    def _acked(self, message: Message) -> None:
        """``towpath.heartbeat.ack``: the server lives; the connections it names in
        ``unknown`` it no longer holds (the client left, or it gave up on them)."""
        control = message.get("control_channel")
        if not isinstance(control, str):
            return
        self.servers.acked(control, message)
        unknown = message.get("unknown")
        if not isinstance(unknown, list):
            return
        ended = 0
        for reply_channel in unknown:
            if not isinstance(reply_channel, str):
                continue
            connection = self.connections.get(reply_channel)
            if connection is not None and connection.control_channel == control:
                ended += connection.abandon()
            host = self.requests.get(reply_channel)
            if host is not None and host.control_channel == control:
                ended += host.abandon()
            if self._http_consumers.get(reply_channel) == control:
                del self._http_consumers[reply_channel]
        if ended:
            self.stats["ended_unknown"] += ended
            logger.info(
                "Ended %d connection(s) interface server %s no longer holds", ended, control
            )

    def _server_gone(self, server: Server) -> None:
        """``server`` did not answer within its timeout: end what this worker serves for it."""
        control = server.control
        ended = 0
        for connection in list(self.connections.values()):
            if connection.control_channel == control:
                ended += connection.abandon()
        for host in list(self.requests.values()):
            if host.control_channel == control:
                ended += host.abandon()
        for reply_channel, consumer_control in list(self._http_consumers.items()):
            if consumer_control == control:
                del self._http_consumers[reply_channel]
        self.stats["ended_server_gone"] += ended
        if self.stopping:
            self._cancel_orphans()
        if not server.gone_logged:  # once per server, though it may be asked again later
            server.gone_logged = True
            self.stats["servers_lost"] += 1
            logger.warning(
                "Interface server %s did not answer heartbeats for %.3g s: it is gone; "
                "ended %d connection(s) of it, and its messages still in the layer are dropped",
                control,
                server.timeout,
                ended,
            )

    def _cancel_orphans(self) -> None:
        """Stopping: HTTP work for a gone server is cancelled, not waited for (nobody can
        read its answer)."""
        for task, control in list(self._http_tasks.items()):
            server = self.servers.get(control)
            if server is not None and server.gone:
                task.cancel()

    # -- new work --------------------------------------------------------------------------------

    def _admit(self, channel: str, message: Message) -> tuple[Verdict, Server | None]:
        """The verdict on an ``http.request`` or ``websocket.connect``; a dropped one is
        counted, and logged once per server."""
        verdict, server = self.servers.admit(message)
        if verdict is Verdict.LATE:
            self.stats["dropped_late"] += 1
            if server is not None and not server.late_logged:
                server.late_logged = True
                logger.warning(
                    "Dropped a %s that interface server %s had given up on (its deadline "
                    "passed while it waited in the layer); such drops are counted "
                    "(dropped_late), this line is not repeated for that server",
                    channel,
                    server.control,
                )
        elif verdict is Verdict.GONE:
            self._dropped_gone(channel, server)
        return verdict, server

    def _dropped_gone(self, channel: str, server: Server | None) -> None:
        self.stats["dropped_server_gone"] += 1
        logger.debug(
            "Dropped a %s from interface server %s, which is gone",
            channel,
            server.control if server is not None else None,
        )

    async def _when_answered(
        self, server: Server, work: Coroutine[Any, Any, None], channel: str
    ) -> None:
        """Run ``work`` once ``server`` answers a heartbeat; drop it if the server is gone."""
        started = False
        try:
            answered = self.servers.ask(server)
            self._probe_soon()
            if await answered:
                started = True
                await work
            else:
                self._dropped_gone(channel, server)
        finally:
            if not started:
                work.close()
