"""The seam between the protocol half and the transport half of the interface server.

The protocol half (this package: HTTP/1.1 on h11, HTTP/2 on h2, WebSocket on wsproto) imports
neither asyncio nor socket. A :class:`Connection` takes bytes in (``data_received``) and puts
bytes out through the :class:`ConnectionIO` it was given; each request or WebSocket it parses
becomes a :class:`Stream`, the ASGI side of that exchange: the app's ``receive`` takes messages
from it, the app's ``send`` gives messages to it. The transport half (``interface/transport.py``)
implements ``ConnectionIO``: it moves bytes, owns the clocks, and runs the app for each stream.

Everything here is synchronous. Where an app must wait (nothing to receive yet, flow control
holding its sends), the stream says so (``receive()`` returns ``None``, ``blocked`` is true) and
later calls ``io.wake(stream)``; the transport's ``receive``/``send`` coroutines wait for that
and ask again.

A connection may hand its transport to another protocol (HTTP/1.1 to WebSocket, to h2c, or to
HTTP/2 on seeing the prior-knowledge preface): it builds the new connection on the same ``io``,
calls ``io.switch_protocol(new)``, then feeds it the bytes it had already read.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from towpath.interface.config import ServerConfig

__all__ = [
    "WS_OUTPUT_LIMIT_EXTENSION",
    "WS_TOO_SLOW_DISCONNECT",
    "ASGIProtocolError",
    "AccessLog",
    "ClientDisconnected",
    "ClientTooSlow",
    "Connection",
    "ConnectionIO",
    "Message",
    "ServerContext",
    "Stream",
]

Message = dict[str, Any]

#: the ASGI extension a WebSocket scope carries when the server bounds what it holds unsent
#: for the client (``ws_output_limit_bytes``: ``{"bytes": limit}``); an app reads it to say why
#: a client was closed
WS_OUTPUT_LIMIT_EXTENSION = "towpath.ws_output_limit"
#: what ``receive`` gives the app at once after the server closed a WebSocket client for
#: leaving too much output unread (the closing handshake goes on without the app)
WS_TOO_SLOW_DISCONNECT: Mapping[str, Any] = MappingProxyType(
    {"type": "websocket.disconnect", "code": 1013, "reason": "client too slow"}
)


class ASGIProtocolError(RuntimeError):
    """The application broke the ASGI protocol (a body before the response start, an unknown
    message type, ...). Raised from the app's ``send``; the connection answers 500 or closes
    1011 and goes on serving others."""


class ClientDisconnected(OSError):
    """``send`` on a stream whose client has gone (ASGI asks for an ``OSError`` subclass)."""


class ClientTooSlow(ClientDisconnected):
    """``send`` of a ``websocket.send`` that would take the output held unsent for the client
    past ``limit`` bytes (``ServerContext.ws_output_limit_bytes``, decoupled mode): the message
    was not written, the client is being closed 1013 instead (and cut if it does not finish
    the closing handshake in time)."""

    def __init__(self, unsent: int, size: int, limit: int) -> None:
        super().__init__(
            f"the client is too slow: {unsent} bytes unsent, and {size} more would pass the "
            f"limit of {limit} (ws_output_limit_bytes)"
        )
        self.unsent = unsent
        self.size = size
        self.limit = limit


class AccessLog(Protocol):
    """Called by protocol objects as exchanges progress; ``stream`` has the scope, ``status``
    and ``response_bytes``. Actions (daphne's access log rows): ``"http.complete"`` (response
    finished or abandoned), ``"websocket.connecting"`` (handshake received),
    ``"websocket.connected"`` (accepted), ``"websocket.rejected"`` (closed or denied before
    accept), ``"websocket.disconnected"`` (an accepted socket ended)."""

    def __call__(self, action: str, stream: Stream) -> None: ...


@dataclass(slots=True, eq=False)
class ServerContext:
    """What every connection of one server shares."""

    config: ServerConfig
    #: the lifespan ``state`` dict; each scope gets a shallow copy of it (ASGI's "state")
    lifespan_state: dict[str, Any] | None = None
    #: set when shutdown began: no new requests on kept-alive connections, no new streams
    shutting_down: bool = False
    #: extensions every scope advertises (e.g. ``{"http.response.trailers": {}}``)
    extensions: dict[str, Any] = field(default_factory=dict)
    #: the access log, or None when it is off (check before building anything for it)
    access_log: AccessLog | None = None
    #: the bound on the output a WebSocket may hold unsent (``ClientTooSlow`` past it), its
    #: app's ``send`` never waiting for the client; None: the app's ``send`` waits for the
    #: client (direct mode). The server sets ``config.ws_output_limit_bytes`` here for an app
    #: that says it must not be held up (``bounded_websocket_output``: the forwarding app)
    ws_output_limit_bytes: int | None = None


class ConnectionIO(Protocol):
    """The transport, as a protocol object sees it."""

    #: peer and local address as ASGI's ``client``/``server`` want them (None for a unix socket
    #: peer); ``tls`` is true on a TLS connection
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    tls: bool

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer (never blocks; the transport applies back-pressure to
        the app's ``send``)."""

    def write_buffer_size(self) -> int:
        """Bytes written and not yet taken by the socket (0 once the connection is lost)."""

    def close(self) -> None:
        """Close after what was written is flushed. Idempotent."""

    def abort(self) -> None:
        """Close now, dropping unwritten data (a reset). Idempotent."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_timer(self, name: str, seconds: float | None) -> None:
        """(Re)arm the timer ``name`` to call ``connection.timeout(name)`` in ``seconds``;
        ``None`` cancels it. Names are the connection's own ("keep-alive", "header", ...)."""

    def start_stream(self, stream: Stream) -> None:
        """Run the application for ``stream`` (its ``scope``, with ``receive``/``send`` bound to
        it). The transport calls ``stream.app_finished`` when the app returns or raises."""

    def wake(self, stream: Stream) -> None:
        """``stream`` changed: it may have a message to receive, its sends may proceed, or it
        ended. Waiting ``receive``/``send`` calls of its app look again."""

    def switch_protocol(self, connection: Connection) -> None:
        """From now on the transport's events go to ``connection`` instead of the caller."""


class Stream(abc.ABC):
    """One ASGI connection (an HTTP request or a WebSocket) within a protocol connection."""

    #: the ASGI scope, complete when the stream is handed to ``io.start_stream``
    scope: dict[str, Any]
    #: true while the app's ``send`` must wait (flow control, a full pipeline); the stream calls
    #: ``io.wake`` when it clears
    blocked: bool = False
    #: the app's ``send`` waits while the stream is ``blocked`` or the transport's buffer is
    #: over its high-water mark; False: it never waits, the stream bounding what it holds
    #: unsent itself (a WebSocket under ``ServerContext.ws_output_limit_bytes``)
    paced: bool = True
    #: for the access log: the response status (101 for an accepted WebSocket, None if none
    #: was sent) and the body bytes sent
    status: int | None = None
    response_bytes: int = 0

    @abc.abstractmethod
    def receive(self) -> Message | None:
        """The next message for the app, or ``None`` when there is none yet. Once the client
        has gone this returns the disconnect message (``http.disconnect``,
        ``websocket.disconnect``) on every call."""

    @abc.abstractmethod
    def send(self, message: Message) -> None:
        """Take a message from the app. Raises :class:`ASGIProtocolError` for a message that
        is wrong at this point, :class:`ClientDisconnected` once the client has gone."""

    @abc.abstractmethod
    def app_finished(self, error: BaseException | None) -> None:
        """The app returned (``error`` is None) or raised. Finish the exchange: a 500 if no
        response was started, a close 1011 for a WebSocket, a reset for a half-sent body."""


class Connection(abc.ABC):
    """A protocol connection: HTTP/1.1, HTTP/2 or an upgraded WebSocket."""

    def __init__(self, io: ConnectionIO, context: ServerContext) -> None:
        self.io = io
        self.context = context

    def connection_made(self) -> None:
        """The transport is connected (arm the first timers). Not called after a switch."""
        return

    @abc.abstractmethod
    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None:
        """The peer will send no more; the default treats it as the connection ending."""
        self.connection_lost()

    @abc.abstractmethod
    def connection_lost(self) -> None:
        """The transport is gone: every open stream learns that its client disconnected."""

    def timeout(self, name: str) -> None:
        """A timer set with ``io.set_timer(name, ...)`` fired."""
        return

    def pause_writing(self) -> None:
        """The transport's write buffer went over its high-water mark: the peer reads slower
        than we write. The apps' ``send`` waits already; a protocol that writes on its own
        (HTTP/2: bodies it holds, answers to control frames) holds back until
        :meth:`resume_writing`. May be called from within ``io.write``."""
        return

    def resume_writing(self) -> None:
        """The write buffer drained below its low-water mark."""
        return

    @abc.abstractmethod
    def shutdown(self, websocket_close_code: int = 1001) -> None:
        """Graceful shutdown began: accept no new requests, close an idle connection now, let
        streams in flight finish, close WebSockets with ``websocket_close_code``."""
