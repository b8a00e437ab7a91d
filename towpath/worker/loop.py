"""The worker: receive from the routed channels, run a consumer per message, stop gracefully.

Two receive loops share one layer. The *shared* loop takes messages from the routed channels
(``http.request``, ``websocket.connect``, job channels, ...) only while a concurrency slot is
free, so a busy worker leaves work in the layer for the others; each message starts one task
(an ASGI app instance or a message consumer). The *owned* loop reads the worker's process
channel, where the interface server sends the events of the WebSockets this worker accepted;
those are handed to their instance's queue, no task, no slot. A lost layer connection is
retried with capped exponential back-off, logged once per outage.

Every ``heartbeat_interval`` seconds the worker tells each interface server it has live
connections on (its *control channel*) which of them it holds (``towpath.heartbeat``); on a
graceful stop it hands its WebSockets back (``towpath.handback``) instead of closing them, so
the server resumes them on another worker (``docs/worker.md``). A full reply channel makes a
send wait for room (:mod:`towpath.worker.room`), never fail the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from typing import Any, cast

from towpath.consumers.base import failed_message_type
from towpath.consumers.messages import current_layer
from towpath.layers.base import BaseChannelLayer
from towpath.layers.outages import OutageWatch
from towpath.layers.registry import register_channel_layer
from towpath.routing import Match, Router, asgi_app, call_message_consumer, route
from towpath.wire import (
    HANDBACK_EVENT,
    HANDBACK_EXTENSION,
    HEARTBEAT_ACK_EVENT,
    HTTP_REQUEST_CHANNEL,
    RELEASED_EVENT,
    WEBSOCKET_CONNECT_CHANNEL,
    WEBSOCKET_DISCONNECT_CHANNEL,
    WEBSOCKET_RECEIVE_CHANNEL,
    wire_to_scope,
)
from towpath.worker.beats import SERVER_STATS, Heartbeats, Verdict
from towpath.worker.channels import WorkerConfigError, filter_channels
from towpath.worker.config import WorkerConfig
from towpath.worker.host import (
    SERVICE_RESTART,
    ASGIApp,
    ConnectionClosed,
    HostedHTTP,
    HostedWebSocket,
    Lifespan,
    Message,
    Scope,
)
from towpath.worker.reach import LayerReach, probe
from towpath.worker.room import SEND_STATS, ReplyRoom
from towpath.worker.servers import Servers

__all__ = ["Worker"]

logger = logging.getLogger("towpath.worker")

_ERROR_500 = b"Internal Server Error"
_STOPPING = b"Service Unavailable: the worker is stopping"
_WEBSOCKET_EVENTS = (WEBSOCKET_RECEIVE_CHANNEL, WEBSOCKET_DISCONNECT_CHANNEL)
#: messages a receive loop dispatches before it lets the other tasks run (the heartbeats above
#: all): a layer that has many fetched returns them without suspending
DISPATCH_BATCH = 64


class _Slot:
    """One unit of ``concurrency``; released once, whoever gets there first."""

    __slots__ = ("held", "semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


class Worker(Heartbeats):
    """Serve the routed channels of ``layer``.

    ``routing``: a route list, a ``Router`` or ``"module:attr"``; or ``app``: one ASGI app for
    every ``http.request`` and ``websocket.connect`` (its lifespan runs at start and stop).
    ``config``: the :class:`~towpath.worker.config.WorkerConfig` (channel filters,
    concurrency, timeouts); its settings may also be given as keyword arguments
    (``Worker(layer, routes, concurrency=50)``), which replace those of ``config``.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        routing: object = None,
        *,
        app: ASGIApp | None = None,
        config: WorkerConfig | None = None,
        **settings: Any,
    ) -> None:
        if (routing is None) == (app is None):
            raise WorkerConfigError("give the worker either routing or an ASGI app, not both")
        base = config if config is not None else WorkerConfig()
        #: the settings, checked once (``towpath.worker.config``)
        self.config = base.replace(**settings) if settings else base
        self.layer = layer
        self.app = app
        if app is not None:
            hosted = asgi_app(app)
            routing = [
                route(HTTP_REQUEST_CHANNEL, hosted),
                route(WEBSOCKET_CONNECT_CHANNEL, hosted),
            ]
        self.router = routing if isinstance(routing, Router) else Router(routing)
        names = set(self.router.channels)
        if WEBSOCKET_CONNECT_CHANNEL in names:  # a pending WebSocket's disconnect comes there
            names.update(_WEBSOCKET_EVENTS)
        config = self.config
        self.channels = filter_channels(names, config.only_channels, config.exclude_channels)
        self.concurrency = config.concurrency
        self.graceful_timeout = config.graceful_timeout
        self.layer_alias = config.layer_alias
        self.retry_initial = config.retry_initial
        self.retry_max = config.retry_max
        self.heartbeat_interval = config.heartbeat_interval
        self.handback_timeout = config.handback_timeout
        #: the worker's process channel (owned WebSockets' events), set by run()
        self.process_channel = ""
        #: live WebSocket instances by reply channel
        self.connections: dict[str, HostedWebSocket] = {}
        #: HTTP requests in flight by reply channel
        self.requests: dict[str, HostedHTTP] = {}
        #: ``handbacks_sent``: WebSockets handed back on stop; ``handbacks_released``: their
        #: instances that ended and said so; ``handback_events_dropped``: their events that
        #: reached this worker after the instance ended; ``heartbeats_sent``;
        #: ``heartbeats_failed``: heartbeats the layer refused. About interface servers
        #: (``towpath.worker.beats``): ``dropped_late``: requests and connects dropped
        #: because their server had given up on them; ``dropped_server_gone``: dropped
        #: because their server was gone; ``ended_server_gone``: connections ended because
        #: their server stopped answering heartbeats; ``ended_unknown``: ended because their
        #: server said it no longer held them; ``servers_lost``: servers found gone. About
        #: full channels: ``sends_delayed``: sends that waited for room in a full reply
        #: channel; ``heartbeats_delayed``: heartbeats that found their control channel full
        #: (sent again by a task of their own)
        self.stats: dict[str, int] = {
            "handbacks_sent": 0,
            "handbacks_released": 0,
            "handback_events_dropped": 0,
            "heartbeats_sent": 0,
            "heartbeats_failed": 0,
            "heartbeats_delayed": 0,
            **dict.fromkeys(SERVER_STATS, 0),
            **dict.fromkeys(SEND_STATS, 0),
        }
        #: the sends waiting for room in full reply channels (cut when the worker stops
        #: waiting for them)
        self.room = ReplyRoom(self.stats)
        self._handed_back: set[str] = set()
        #: the handbacks being sent (a stop waits for them)
        self._handing: set[asyncio.Task[None]] = set()
        self._http_consumers = {}
        self._http_tasks = {}
        self._probing = None
        self._unlisted = set()
        self._listing = None
        self._next_early = 0.0
        self._beating = {}
        self._beats_pending = {}
        #: the interface servers this worker heard of: alive or gone (``docs/protocol.md``)
        self.servers = Servers()
        self._outage_watch = OutageWatch(layer)
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.lifespan = Lifespan(app) if app is not None else None
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._started = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Worker on {', '.join(self.channels)}>"

    # -- control ---------------------------------------------------------------------------------

    def stop(self, force: bool = False) -> None:
        """Stop receiving and finish in-flight work (bounded by ``graceful_timeout``); a
        second call (or ``force``) cancels what is still running at once, sends waiting for
        room in a full reply channel included."""
        if self._stop.is_set() or force:
            self._force.set()
            self.room.cut = True
        self._stop.set()

    async def started(self) -> None:
        """Wait until the worker receives (lifespan done, process channel made)."""
        await self._started.wait()

    async def run(self) -> None:
        """Serve until :meth:`stop`; returns once everything in flight finished or was cut.
        Raises ``LifespanFailure`` when a hosted app's startup failed."""
        layer = self.layer
        # consumers look their layer up by alias (channel_layer_alias)
        register_channel_layer(self.layer_alias, layer)
        current_layer.set(layer)
        listening = ", ".join(self.channels)
        reach = LayerReach(
            layer,
            self._stop,
            f"listening on {listening}",
            retry_initial=self.retry_initial,
            retry_max=self.retry_max,
        )
        made, channel = await reach.until_reachable(lambda: layer.new_channel("worker"))
        if not made or channel is None:
            logger.info("worker stopped before its channel layer answered")
            return
        self.process_channel = channel
        if self.lifespan is not None:
            await self.lifespan.startup()
        reached, _ = await reach.until_reachable(lambda: probe(layer, channel))
        if not reached:
            logger.info("worker stopped before its channel layer answered")
            if self.lifespan is not None:
                await self.lifespan.shutdown()
            return
        logger.info("worker listening on %s", listening)
        loop = asyncio.get_running_loop()
        shared = loop.create_task(self._receive_loop(tuple(self.channels), True))
        owned = loop.create_task(self._receive_loop((self.process_channel,), False))
        beating = loop.create_task(self._heartbeat_loop())
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            self.stopping = True
            shared.cancel()
            await asyncio.gather(shared, return_exceptions=True)
            try:  # what the layer fetched ahead for us goes to the other workers now (a
                # resumed connect of a WebSocket handed back below must not wait for our exit)
                await layer.stop_receiving(self.channels)
            except Exception as exc:
                logger.warning("Could not give back what the layer fetched ahead: %r", exc)
            try:
                await self._drain()
            finally:
                # heartbeats go on while the drain lets HTTP requests finish
                owned.cancel()
                beating.cancel()
                for sending in (self._probing, self._listing, *list(self._beating.values())):
                    if sending is not None:
                        sending.cancel()
                        await asyncio.gather(sending, return_exceptions=True)
                await asyncio.gather(owned, beating, return_exceptions=True)
                if self.lifespan is not None:
                    await self.lifespan.shutdown()
        logger.info("worker stopped")

    async def _drain(self) -> None:
        for connection in list(self.connections.values()):
            if connection.owned:
                self._hand_back_soon(connection)
        self._cancel_orphans()
        if self.tasks or self._handing:
            logger.info(
                "finishing %d consumer(s) in flight (up to %.3g s)",
                len(self.tasks),
                self.graceful_timeout,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.graceful_timeout
            forced = asyncio.ensure_future(self._force.wait())
            while (self.tasks or self._handing) and not self._force.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    {*self.tasks, *self._handing, forced},
                    timeout=remaining,
                    return_when="FIRST_COMPLETED",
                )
            forced.cancel()
        self.room.cut = True  # what waits for room now ends at once (it would hold the stop)
        if self.tasks:
            logger.warning("cancelling %d consumer(s) still running", len(self.tasks))
        tasks = [*self.tasks, *self._handing]
        if tasks:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)

    def _hand_back_soon(self, connection: HostedWebSocket) -> None:
        """Hand ``connection`` back in a task of its own: a server whose reply channels are
        full holds up only its own handbacks (the stop waits for them as for consumers)."""
        task = asyncio.get_running_loop().create_task(self._hand_back(connection))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _hand_back(self, connection: HostedWebSocket) -> None:
        """Give an owned WebSocket back to its interface server, which resumes it on another
        worker; the local instance gets ``websocket.disconnect`` (1012, ``handed_back``). A
        full reply channel is waited on while the connection is owned here."""
        if not connection.owned:
            return
        reply_channel = connection.reply_channel
        handback: Message = {"type": HANDBACK_EVENT, "worker": self.process_channel}
        channel = connection.extension.get("channel")
        if isinstance(channel, str):  # its consumer's: the successor cuts over from it
            handback["channel"] = channel
        try:
            sent = await self.room.send(
                self.layer.send, reply_channel, handback, lambda: connection.owned
            )
        except Exception as exc:
            # the server will find the worker gone once the heartbeats stop
            logger.warning("Could not hand WebSocket %s back: %r", reply_channel, exc)
        else:
            if not sent:
                if not connection.owned:
                    return  # it ended meanwhile: nothing to hand back
                logger.warning(
                    "Could not hand WebSocket %s back: its reply channel was still full when "
                    "the stop was forced",
                    reply_channel,
                )
            else:
                self.stats["handbacks_sent"] += 1
        connection.hand_back()
        self._handed_back.add(reply_channel)

    async def _released(self, connection: HostedWebSocket) -> None:
        """A handed-back instance ended: the server may let its successor's output out."""
        released = {
            "type": RELEASED_EVENT,
            "worker": self.process_channel,
            "order": connection.taken_order,
        }
        channel = connection.reply_channel
        try:
            sent = await self.room.send(
                self.layer.send, channel, released, lambda: not connection.lost
            )
        except Exception as exc:  # the server lets it out after its timeout
            logger.warning("Could not release WebSocket %s: %r", channel, exc)
        else:
            self.stats["handbacks_released"] += sent

    async def _close_quietly(self, connection: HostedWebSocket, code: int) -> None:
        try:
            await connection.close(code)
        except Exception as exc:
            logger.debug("Could not close WebSocket %s: %r", connection.reply_channel, exc)

    # -- receiving -------------------------------------------------------------------------------

    async def _receive_loop(self, channels: tuple[str, ...], slots: bool) -> None:
        layer = self.layer
        semaphore = self._semaphore
        delay = 0.0
        dispatched = 0
        while True:
            dispatched += 1
            if dispatched % DISPATCH_BATCH == 0:
                await asyncio.sleep(0)  # a batch the layer had fetched: let the others run
            if slots:
                await semaphore.acquire()
            try:
                channel, message = await layer.receive_many(channels)
            except asyncio.CancelledError:
                if slots:
                    semaphore.release()
                raise
            except Exception as exc:
                if slots:
                    semaphore.release()
                if not delay:
                    delay = self.retry_initial
                    if isinstance(exc, ConnectionError | OSError):
                        logger.warning(
                            "lost the channel layer (%r); retrying with back-off up to %.3g s",
                            exc,
                            self.retry_max,
                        )
                    else:
                        logger.exception("receiving from the channel layer failed; retrying")
                else:
                    delay = min(delay * 2, self.retry_max)
                await asyncio.sleep(delay)
                continue
            if delay:
                logger.warning("the channel layer is reachable again")
                delay = 0.0
            slot = _Slot(semaphore) if slots else None
            try:
                self._dispatch(channel, message, slot)
            except Exception:
                logger.exception("Could not dispatch a message from %s", channel)
                if slot is not None:
                    slot.release()

    def _dispatch(self, channel: str, message: Message, slot: _Slot | None) -> None:
        """Hand ``message`` to its connection, or start its consumer's task."""
        if not isinstance(message, dict):
            logger.warning("Dropped a non-dict message from %s: %r", channel, message)
            if slot is not None:
                slot.release()
            return
        if channel == self.process_channel and message.get("type") == HEARTBEAT_ACK_EVENT:
            self._acked(message)
            return
        if channel == self.process_channel or channel in _WEBSOCKET_EVENTS:
            connection = self.connections.get(message.get("reply_channel", ""))
            if connection is not None or channel == self.process_channel:
                if connection is not None:
                    connection.deliver(message)
                elif message.get("reply_channel") in self._handed_back:
                    self.stats["handback_events_dropped"] += 1
                    logger.info(
                        "Dropped %s for WebSocket %s, sent before it was handed back",
                        message.get("type"),
                        message.get("reply_channel"),
                    )
                else:
                    logger.debug(
                        "Dropped %s for unknown connection %s",
                        message.get("type"),
                        message.get("reply_channel"),
                    )
                if slot is not None:
                    slot.release()
                return
        verdict, server = Verdict.START, None
        if channel in (HTTP_REQUEST_CHANNEL, WEBSOCKET_CONNECT_CHANNEL):
            verdict, server = self._admit(channel, message)
            if verdict is Verdict.LATE or verdict is Verdict.GONE:
                if slot is not None:
                    slot.release()
                return
        match = self.router.match(channel, message)
        if match is None:
            logger.info("No route for a %r message on %s; dropped", message.get("type"), channel)
            if slot is not None:
                slot.release()
            return
        if match.kind == "message":
            coro: Any = self._run_message(match, channel, message)
        elif channel == HTTP_REQUEST_CHANNEL:
            coro = self._run_http(match, message)
        elif channel == WEBSOCKET_CONNECT_CHANNEL:
            coro = self._run_websocket(match, message, slot)
        else:
            logger.error(
                "The route for %s names an ASGI app, but only http.request and "
                "websocket.connect start app instances; dropped",
                channel,
            )
            if slot is not None:
                slot.release()
            return
        if verdict is Verdict.PROBE and server is not None:
            coro = self._when_answered(server, coro, channel)
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if channel == HTTP_REQUEST_CHANNEL and server is not None:
            self._http_tasks[task] = server.control
            task.add_done_callback(self._http_tasks.pop)
        if slot is not None:
            task.add_done_callback(lambda _: slot.release())

    # -- consumers -------------------------------------------------------------------------------

    def _report(
        self, what: object, channel: str, message: Message, handling: str | None = None
    ) -> None:
        """Log the exception being handled: the consumer, the type of the message it was
        handling when it raised (a consumer class says which; else ``handling``, the last event
        its host gave it; else ``message``'s) and the traceback, the consumer's frames in it."""
        kind = failed_message_type(sys.exc_info()[1]) or handling or message.get("type")
        scope = message.get("scope")
        scope = scope if isinstance(scope, dict) else {}
        if channel == WEBSOCKET_CONNECT_CHANNEL:
            where = f"of WebSocket {scope.get('path')} (its connect came from {channel})"
        elif channel == HTTP_REQUEST_CHANNEL and "path" in scope:
            where = f"from channel {channel} ({scope.get('method')} {scope.get('path')})"
        else:
            where = f"from channel {channel}"
        logger.error(
            "Consumer %r failed on a %r message %s:\n%s",
            what,
            kind,
            where,
            traceback.format_exc().rstrip(),
        )

    async def _run_message(self, match: Match, channel: str, message: Message) -> None:
        if channel != HTTP_REQUEST_CHANNEL:
            await self._call_message(match, channel, message)
            return
        # an HTTP request a message consumer answers: live while the consumer runs
        reply_channel = message.get("reply_channel")
        control = message.get("control_channel")
        if not isinstance(reply_channel, str) or not isinstance(control, str):
            await self._call_message(match, channel, message)
            return
        consumers = self._http_consumers
        consumers[reply_channel] = control
        self._list_soon(control)
        try:
            await self._call_message(match, channel, message)
        finally:
            if consumers.get(reply_channel) is control:
                del consumers[reply_channel]

    async def _call_message(self, match: Match, channel: str, message: Message) -> None:
        try:
            await call_message_consumer(match, message)
        except asyncio.CancelledError:
            await self._answer_failed(channel, message, 503, _STOPPING, SERVICE_RESTART)
            raise
        except Exception:
            self._report(match.target, channel, message)
            await self._answer_failed(channel, message, 500, _ERROR_500, 1011)

    async def _answer_failed(
        self, channel: str, message: Message, status: int, text: bytes, code: int
    ) -> None:
        """Answer for a message consumer that failed, rather than leave the client waiting for
        the server's timeout (after a complete reply the server ignores this; after a partial
        one it resets the connection)."""
        if not isinstance(message.get("reply_channel"), str):
            return
        if channel == HTTP_REQUEST_CHANNEL:
            host = HostedHTTP(self.layer, message, self.room)
            reply_channel = host.reply_channel
            # while it waits for room: ended like the others if its server is gone
            self.requests.setdefault(reply_channel, host)
            try:
                await self._fail_quietly(host, status, text)
            finally:
                if self.requests.get(reply_channel) is host:
                    del self.requests[reply_channel]
        elif channel == WEBSOCKET_CONNECT_CHANNEL:
            with contextlib.suppress(Exception):
                close = {"type": "websocket.close", "code": code}
                await self.layer.send(message["reply_channel"], close)

    def _state(self) -> dict[str, Any] | None:
        lifespan = self.lifespan
        return lifespan.state if lifespan is not None and lifespan.supported else None

    async def _run_http(self, match: Match, message: Message) -> None:
        reply_channel = message.get("reply_channel")
        if not isinstance(reply_channel, str):
            logger.warning("Dropped an http.request without a reply_channel: %.200r", message)
            return
        host = HostedHTTP(self.layer, message, self.room)
        requests = self.requests
        requests[reply_channel] = host
        self._list_soon(host.control_channel)
        scope = wire_to_scope(match.scope if match.scope is not None else {}, self._state())
        try:
            await self._serve_http(match, message, host, scope)
        finally:
            if requests.get(reply_channel) is host:
                del requests[reply_channel]

    async def _serve_http(
        self, match: Match, message: Message, host: HostedHTTP, scope: Scope
    ) -> None:
        try:
            await cast(ASGIApp, match.target)(scope, host.receive, host.send)
        except asyncio.CancelledError:
            await self._fail_quietly(host, 503, _STOPPING)
            raise
        except ConnectionClosed as exc:  # sent after its client (or server) was gone
            logger.info("%r stopped: %s", match.target, exc)
        except Exception:
            self._report(match.target, HTTP_REQUEST_CHANNEL, message)
            await self._fail_quietly(host, 500, _ERROR_500)
        else:
            if not host.complete and not host.disconnected:
                logger.error(
                    "%r returned without completing its response to %s %s",
                    match.target,
                    scope.get("method"),
                    scope.get("path"),
                )
                await self._fail_quietly(host, 500, _ERROR_500)

    async def _fail_quietly(self, host: HostedHTTP, status: int, text: bytes) -> None:
        try:
            await host.fail(status, text)
        except Exception as exc:
            logger.debug("Could not answer %s: %r", host.reply_channel, exc)

    async def _run_websocket(self, match: Match, message: Message, slot: _Slot | None) -> None:
        reply_channel = message.get("reply_channel")
        if not isinstance(reply_channel, str):
            logger.warning("Dropped a websocket.connect without a reply_channel: %.200r", message)
            return

        def answered(connection: HostedWebSocket) -> None:
            if slot is not None:
                slot.release()
            if self.stopping and connection.accepted:  # accepted while draining
                self._hand_back_soon(connection)

        connection = HostedWebSocket(
            self.layer,
            message,
            self.process_channel,
            answered,
            self.handback_timeout,
            self.room,
        )
        self.connections[reply_channel] = connection
        scope = wire_to_scope(match.scope if match.scope is not None else {}, self._state())
        extensions = scope.get("extensions")
        if not isinstance(extensions, dict):
            extensions = scope["extensions"] = {}
        extensions[HANDBACK_EXTENSION] = connection.extension
        try:
            await cast(ASGIApp, match.target)(scope, connection.receive, connection.send)
        except asyncio.CancelledError:
            await self._close_quietly(connection, SERVICE_RESTART)
            raise
        except ConnectionClosed as exc:  # sent after its client (or server) was gone
            logger.info("%r stopped: %s", match.target, exc)
            await self._close_quietly(connection, 1011)  # (nothing to close, mostly)
        except Exception:
            self._report(match.target, WEBSOCKET_CONNECT_CHANNEL, message, connection.handling)
            await self._close_quietly(connection, 1011)
        else:
            await self._close_quietly(connection, 1000)
        finally:
            if self.connections.get(reply_channel) is connection:
                del self.connections[reply_channel]
            if connection.handed_back and not connection.lost:
                await self._released(connection)
