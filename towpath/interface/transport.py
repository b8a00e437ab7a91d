"""The asyncio half of the interface server: one :class:`ServerProtocol` per accepted socket.

It implements :class:`~towpath.interface.protocol.base.ConnectionIO` for the protocol objects
(which import neither asyncio nor socket): it moves bytes between the socket and the current
:class:`~towpath.interface.protocol.base.Connection`, owns the connection's timers
(``loop.call_later`` keyed by name), runs each stream's app with a
:class:`~towpath.interface.runner.StreamRunner`, and applies write back-pressure: while the
socket's buffer is over its high-water mark (``pause_writing``) the apps' ``send`` waits, and the
connection is told (``Connection.pause_writing``/``resume_writing``), so that a protocol that
writes on its own (HTTP/2's bodies and answers to control frames) holds back too.

This is the hot path, so it stays thin: no task per request but the app's own, no queues, and
``write`` goes straight to the socket transport. Everything the connections of one server share
(the app, the :class:`ServerContext`, the set of live connections and app tasks, the connection
limit) is in one :class:`ServerState`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable
from typing import Any, cast

from towpath.interface.accept import connection_limit
from towpath.interface.protocol.base import Connection, ServerContext, Stream
from towpath.interface.runner import ASGIApp, StreamRunner

__all__ = ["ServerProtocol", "ServerState", "connection_class_for"]

logger = logging.getLogger("towpath.interface")

#: the answer to a connection over ``max_connections`` (then the socket is closed)
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Service Unavailable"
)

#: socket write buffer limits: over ``HIGH`` the apps' sends wait until it drains below ``LOW``
WRITE_HIGH_WATER_BYTES = 256 * 1024
WRITE_LOW_WATER_BYTES = 64 * 1024


class ServerState:
    """What the transports of one server share: the app, the context, the live connections
    and app tasks (so shutdown can find and wait for them), and the connection limit."""

    __slots__ = ("app", "connections", "context", "drained", "max_connections", "tasks")

    def __init__(self, app: ASGIApp, context: ServerContext) -> None:
        self.app = app
        self.context = context
        #: ``max_connections``, or by default what the file-descriptor limit allows
        self.max_connections = context.config.max_connections or connection_limit()
        self.connections: set[ServerProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        #: set (by shutdown) to an event that fires once no connection and no app task is left
        self.drained: asyncio.Event | None = None

    def check_drained(self) -> None:
        if self.drained is not None and not self.connections and not self.tasks:
            self.drained.set()


def connection_class_for(alpn: str | None) -> type[Connection]:
    """The protocol for a new connection: HTTP/2 when ALPN chose ``h2``, else HTTP/1.1 (which
    itself hands over to h2c or WebSocket). Imported lazily: the server starts without them."""
    name = "h2.H2Connection" if alpn == "h2" else "http11.HTTP11Connection"
    connection_class = _connection_classes.get(name)
    if connection_class is None:
        module, _, attr = name.partition(".")
        connection_class = getattr(
            importlib.import_module(f"towpath.interface.protocol.{module}"), attr
        )
        _connection_classes[name] = connection_class
    return connection_class


_connection_classes: dict[str, type[Connection]] = {}


def _address(value: Any) -> tuple[str, int] | None:
    """An ASGI ``(host, port)`` from a socket name; None for a unix socket (a str or bytes)."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


class ServerProtocol(asyncio.Protocol):
    """One client connection: ``asyncio.Protocol`` outside, ``ConnectionIO`` inside."""

    __slots__ = (
        "_connection_class",
        "_drain_waiter",
        "_lost",
        "_overflow",
        "_runners",
        "_state",
        "_timers",
        "_transport",
        "_write_paused",
        "client",
        "connection",
        "loop",
        "server",
        "tls",
    )

    def __init__(self, state: ServerState, connection_class: type[Connection] | None = None):
        self._state = state
        #: tests may force a protocol class; None: chosen by ALPN / HTTP/1.1 default
        self._connection_class = connection_class
        self.loop = asyncio.get_running_loop()
        self.connection: Connection | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.tls = False
        self._transport: asyncio.Transport | None = None
        self._timers: dict[str, asyncio.Handle] = {}
        self._runners: dict[Stream, StreamRunner] = {}
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._overflow = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance)
        self._transport = transport = cast(asyncio.Transport, transport)
        state = self._state
        self.client = _address(transport.get_extra_info("peername"))
        self.server = _address(transport.get_extra_info("sockname"))
        ssl_object = transport.get_extra_info("ssl_object")
        self.tls = ssl_object is not None
        if state.max_connections is not None and len(state.connections) >= state.max_connections:
            # over the limit: answer 503 once the request arrives (closing before reading it
            # would reset the connection and the client might never see the answer)
            self._overflow = True
            self.set_timer("overflow", state.context.config.header_timeout_seconds)
            return
        if state.context.shutting_down:
            transport.abort()
            return
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
        state.connections.add(self)
        connection_class = self._connection_class
        if connection_class is None:
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            connection_class = connection_class_for(alpn)
        self.connection = connection = connection_class(self, state.context)
        try:
            connection.connection_made()
        except Exception:
            logger.exception("protocol error on a new connection; closing it")
            transport.abort()

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None:
            if self._overflow and self._transport is not None:
                self._overflow = False
                self._transport.write(SERVICE_UNAVAILABLE)
                self._transport.close()
            return
        try:
            connection.data_received(data)
        except Exception:
            logger.exception("protocol error while reading; closing the connection")
            self.abort()

    def eof_received(self) -> bool | None:
        connection = self.connection
        if connection is None:
            return None
        try:
            connection.eof_received()
        except Exception:
            logger.exception("protocol error at end of input; closing the connection")
            self.abort()
            return None
        if self.tls or type(connection).eof_received is Connection.eof_received:
            # the default treats EOF as the end, and asyncio's TLS transport cannot half-close
            return None
        return True  # the protocol decides when to close (a response may still be coming)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._release_writers()
        state = self._state
        state.connections.discard(self)
        connection = self.connection
        if connection is not None:
            try:
                connection.connection_lost()
            except Exception:
                logger.exception("protocol error on connection loss")
        state.check_drained()

    def pause_writing(self) -> None:
        self._write_paused = True
        connection = self.connection
        if connection is not None:
            connection.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_writers()
        connection = self.connection
        if connection is not None and not self._lost:
            try:
                connection.resume_writing()
            except Exception:
                logger.exception("protocol error when writing resumed; closing the connection")
                self.abort()

    def _release_writers(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _writable(self) -> Awaitable[None] | None:
        """The runner's ``writable``: None while the socket's write buffer is below its
        high-water mark (the common case, checked after every send), else a wait for it to
        drain. Returns None once the connection is lost: the next send raises."""
        if self._write_paused and not self._lost:
            return self._drained()
        return None

    async def _drained(self) -> None:
        while self._write_paused and not self._lost:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.loop.create_future()
            await asyncio.shield(waiter)  # one cancelled sender must not fail the others

    # -- ConnectionIO ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._lost:
            transport.write(data)

    def write_buffer_size(self) -> int:
        transport = self._transport
        if transport is None or self._lost:
            return 0
        return transport.get_write_buffer_size()

    def close(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        transport = self._transport
        if transport is not None and not self._lost:
            transport.abort()

    def pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def set_timer(self, name: str, seconds: float | None) -> None:
        timers = self._timers
        handle = timers.pop(name, None)
        if handle is not None:
            handle.cancel()
        if seconds is not None and not self._lost:
            # 0 means "after this loop turn" (HTTP/1.1 flushes a lone response head so): a
            # plain call_soon, cheaper than a timer
            timers[name] = (
                self.loop.call_soon(self._fire, name)
                if seconds == 0
                else self.loop.call_later(seconds, self._fire, name)
            )

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        if self._overflow and name == "overflow":
            self.abort()
            return
        connection = self.connection
        if connection is None or self._lost:
            return
        try:
            connection.timeout(name)
        except Exception:
            logger.exception("protocol error in timer %r; closing the connection", name)
            self.abort()

    def start_stream(self, stream: Stream) -> None:
        runner = StreamRunner(self._state.app, stream, self._writable)
        self._runners[stream] = runner
        task = self.loop.create_task(self._run(runner))
        runner.task = task
        self._state.tasks.add(task)

    async def _run(self, runner: StreamRunner) -> None:
        try:
            await runner.run()
        finally:
            self._runners.pop(runner.stream, None)
            state = self._state
            task = runner.task
            if task is not None:
                state.tasks.discard(task)
            state.check_drained()

    def wake(self, stream: Stream) -> None:
        runner = self._runners.get(stream)
        if runner is not None:
            runner.wake()

    def switch_protocol(self, connection: Connection) -> None:
        self.connection = connection
        if self._write_paused:
            connection.pause_writing()

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self, websocket_close_code: int = 1001) -> None:
        """Graceful shutdown began: the protocol stops taking requests and closes when idle."""
        connection = self.connection
        if connection is None or self._lost:
            return
        try:
            connection.shutdown(websocket_close_code)
        except Exception:
            logger.exception("protocol error on shutdown; closing the connection")
            self.abort()

    def force_close(self) -> None:
        """The graceful period is over: cut the connection and cancel its apps."""
        self.abort()
        for runner in list(self._runners.values()):
            if runner.task is not None:
                runner.task.cancel()
