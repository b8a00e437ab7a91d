"""WebSocket on wsproto: an upgraded HTTP/1.1 connection, or (RFC 8441) one HTTP/2 stream.

The ASGI side is :class:`WebSocketStream`, the same for both: it negotiates the handshake
(subprotocol, permessage-deflate), runs wsproto's frame-level ``Connection`` and turns frames
into ``websocket.*`` messages and back. What differs per transport is a small
:class:`WebSocketCarrier`: how the accept or denial response head is written, where frame bytes
go, how the carrier ends. :class:`WebSocketConnection` is the HTTP/1.1 carrier and a
:class:`~towpath.interface.protocol.base.Connection` itself; ``h2_websocket.py`` implements the
carrier for an extended CONNECT stream.

wsproto's ``WSConnection`` would parse an HTTP/1.1 handshake, but over HTTP/2 there is none, so
the handshake is ours (:mod:`~towpath.interface.protocol.websocket_handshake`: version, key,
``Origin``, permessage-deflate with bounded memory; ``generate_accept_token``) and only the frame
layer is wsproto's.

Subprotocols: the app's ``websocket.accept`` may name one the client offered (anything else is
an app bug: 403 and :class:`ASGIProtocolError`); with ``config.ws_protocols`` set, a choice
outside that list is refused with 403 too, as a handshake the server will not complete. The
message limit counts bytes for binary messages and characters for text (wsproto decodes text
as it arrives); it trips while a message is still arriving, so nothing past it is buffered.

Timers (through the carrier): ``"ping"`` sends a keepalive ping every
``ws_ping_interval_seconds``; ``"pong"`` drops the connection when that ping's pong is late;
``"lifetime"`` closes with 1000 after ``websocket_timeout_seconds``; ``"close"`` ends the
carrier when the client does not answer our close frame.

Output bound (``ServerContext.ws_output_limit_bytes``, decoupled mode): the stream is not
``paced`` (the app's ``send`` never waits for the client) and a ``websocket.send`` whose frame
would take what the carrier holds unsent (``unsent_bytes``) past the limit is not written: the
stream closes 1013 ("client too slow"), raises :class:`ClientTooSlow` (an ``OSError``, as
ASGI asks of a send to a closed connection) and ``receive`` gives the app the disconnect at once
(``WS_TOO_SLOW_DISCONNECT``: the app need not wait for a client that does not read); if the
client does not answer that close in time the carrier is aborted (a plain close would wait for
it to read what is held). A frame goes out whatever its size when nothing is held unsent.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.utilities import generate_accept_token

from towpath.interface.protocol.base import (
    WS_TOO_SLOW_DISCONNECT,
    ASGIProtocolError,
    ClientDisconnected,
    ClientTooSlow,
    Connection,
    ConnectionIO,
    Message,
    ServerContext,
    Stream,
)
from towpath.interface.protocol.headers import bad_header, date_value, status_line
from towpath.interface.protocol.scope import websocket_scope
from towpath.interface.protocol.websocket_handshake import (
    handshake_problem,
    negotiate_deflate,
    offered_subprotocols,
)

__all__ = [
    "CLOSE_TIMEOUT_SECONDS",
    "WebSocketCarrier",
    "WebSocketConnection",
    "WebSocketStream",
    "handshake_problem",
    "offered_subprotocols",
]

logger = logging.getLogger("towpath.interface")

#: how long the client has to answer our close frame before the carrier is ended anyway
CLOSE_TIMEOUT_SECONDS = 5.0
#: received messages waiting for the app before reading pauses (resumes at ``_RESUME_AT``)
_PAUSE_AT = 16
_RESUME_AT = 4
#: with permessage-deflate, inbound bytes go to the inflater in slices this big, so one read
#: cannot inflate past the message limit by more than ~1000 times this
_INFLATE_SLICE_BYTES = 4096
#: bytes buffered before the app accepted, past which reading pauses
_PENDING_PAUSE_BYTES = 64 * 1024

#: the reason sent with a close code when the client broke the protocol (fixed texts: what
#: went wrong in detail is for the server's debug log, not for the peer)
_FAIL_REASONS = {1002: "protocol error", 1007: "invalid frame payload data"}

#: close codes only ever reported, never sent (RFC 6455 7.4.1)
_LOCAL_CODES = frozenset({1004, 1005, 1006, 1015})

# stream states
_CONNECTING = 0  # handshake received, app has not answered
_OPEN = 1  # accepted
_CLOSING = 2  # we sent a close frame, waiting for the client's
_CLOSED = 3  # over: receive() gives the disconnect message
_DENYING = 4  # a denial response is being written


class WebSocketCarrier(Protocol):
    """What a :class:`WebSocketStream` writes through: an upgraded HTTP/1.1 connection or an
    HTTP/2 stream. A carrier may also offer ``pause_reading()``/``resume_reading()``; the
    stream uses them (when present) while many received messages wait for the app."""

    #: True: the accept is ``:status 200`` with no ``Sec-WebSocket-Accept`` (RFC 8441)
    http2: bool

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """The accept (101 on HTTP/1.1, the carrier adding upgrade/connection/accept headers;
        200 on HTTP/2) or a denial response head; ``end``: no body follows."""

    def send_data(self, data: bytes, end: bool = False) -> None:
        """Frame bytes, or a denial body (``end`` after its last piece)."""

    def close(self) -> None:
        """End cleanly after what was written is flushed (h1: ``io.close``; h2: END_STREAM)."""

    def abort(self) -> None:
        """End now (h1: ``io.abort``; h2: RST_STREAM(CANCEL))."""

    def set_timer(self, name: str, seconds: float | None) -> None:
        """(Re)arm the stream's timer ``name``; it calls ``stream.timeout(name)``."""

    def unsent_bytes(self) -> int:
        """Output written to this carrier and still held in this process (h1: the transport's
        write buffer; h2: the stream's frames waiting for its window or the socket)."""


class WebSocketStream(Stream):
    """One WebSocket as an ASGI stream, over any :class:`WebSocketCarrier`.

    The carrier feeds it ``data_received`` (frame bytes), ``connection_lost``, ``timeout``
    and ``shutdown``; the app talks to it through ``receive``/``send``.
    """

    def __init__(
        self,
        context: ServerContext,
        scope: dict[str, Any],
        carrier: WebSocketCarrier,
        io: ConnectionIO | None = None,
    ) -> None:
        self.context = context
        self.scope = scope
        self.carrier = carrier
        #: the transport, to wake the app when a message arrives or the socket ends (default:
        #: the carrier's ``io`` attribute)
        self.io: ConnectionIO | None = io if io is not None else getattr(carrier, "io", None)
        config = context.config
        self._max_message = config.max_websocket_message_bytes
        #: the bound on the output held unsent (None: the app's ``send`` waits instead)
        self._output_limit = context.ws_output_limit_bytes
        self.paced = self._output_limit is None
        #: closed 1013 for reading too slowly: cut, not closed, when the close times out
        self.too_slow = False
        self._state = _CONNECTING
        self._ws: WSProtoConnection | None = None
        self._inbox: deque[Message] = deque()
        self._inbox.append({"type": "websocket.connect"})
        self._disconnect: Message | None = None
        self._pending = bytearray()  # bytes received before the accept
        self._parts: list[Any] = []  # fragments of the message being received
        self._size = 0
        self._deflate = False
        self._paused = False
        self._app_done = False
        self._denial_head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._log = context.access_log
        pause = getattr(carrier, "pause_reading", None)
        resume = getattr(carrier, "resume_reading", None)
        self._flow = (pause, resume) if pause is not None and resume is not None else None
        if self._log is not None:
            self._log("websocket.connecting", self)

    # -- from the carrier -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state in (_OPEN, _CLOSING):
            if self._deflate and len(data) > _INFLATE_SLICE_BYTES:
                view = memoryview(data)
                for start in range(0, len(data), _INFLATE_SLICE_BYTES):
                    self._frames(bytes(view[start : start + _INFLATE_SLICE_BYTES]))
                    if self._state != _OPEN and self._state != _CLOSING:
                        return
            else:
                self._frames(data)
        elif state == _CONNECTING:
            self._pending += data
            if len(self._pending) > _PENDING_PAUSE_BYTES:
                self._pause()

    def connection_lost(self) -> None:
        state = self._state
        if state == _CLOSED:
            return
        self._cancel_timers()
        if state in (_CONNECTING, _DENYING):
            self._ended(1006, "", accepted=False)
        else:
            self._ended(1006, "", accepted=True)

    def timeout(self, name: str) -> None:
        state = self._state
        config = self.context.config
        if name == "ping":
            if state == _OPEN and self._ws is not None:
                self._write(self._ws.send(Ping(b"towpath")))
                self.carrier.set_timer("pong", config.ws_ping_timeout_seconds)
        elif name == "pong":
            if state in (_OPEN, _CLOSING):
                logger.debug("WebSocket pong timeout: dropping %s", self.scope.get("client"))
                self._cancel_timers()
                self.carrier.abort()
                self._ended(1006, "", accepted=True)
        elif name == "lifetime":
            if state == _OPEN:
                self._close(1000, "")
        elif name == "close" and state == _CLOSING:
            if self.too_slow:  # a close would wait for it to read what is held
                self.carrier.abort()
            else:
                self.carrier.close()
            self._ended(1006, "", accepted=True)

    def shutdown(self, code: int = 1001) -> None:
        """Graceful shutdown: an accepted socket gets a close frame with ``code``."""
        if self._state == _OPEN:
            self._close(code, "Server shutdown")

    # -- Stream (the app's side) ----------------------------------------------------------------

    def receive(self) -> Message | None:
        inbox = self._inbox
        if inbox:
            message = inbox.popleft()
            if self._paused and len(inbox) <= _RESUME_AT:
                self._resume()
            return message
        if self.too_slow:  # the app is told at once; the closing handshake goes on
            return dict(WS_TOO_SLOW_DISCONNECT)
        if self._state == _CLOSED:
            return self._disconnect
        return None

    def send(self, message: Message) -> None:
        kind = message["type"]
        state = self._state
        if kind == "websocket.send":
            if state != _OPEN:
                if state == _CONNECTING:
                    raise ASGIProtocolError("websocket.send before websocket.accept")
                raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            data = message.get("bytes")
            ws = self._ws
            assert ws is not None
            try:
                if text is not None and data is None:
                    if type(text) is not str:
                        raise TypeError(f"'text' must be str, not {type(text).__name__}")
                    frame = ws.send(TextMessage(data=text))
                elif data is not None and text is None:
                    if not isinstance(data, bytes | bytearray):
                        raise TypeError(f"'bytes' must be bytes, not {type(data).__name__}")
                    frame = ws.send(BytesMessage(data=data))
                else:
                    raise TypeError("exactly one of 'bytes' and 'text' is needed")
            except (TypeError, ValueError) as exc:
                raise ASGIProtocolError(f"bad websocket.send: {exc}") from None
            limit = self._output_limit
            if limit is not None:
                unsent = self.carrier.unsent_bytes()
                if unsent and unsent + len(frame) > limit:
                    self.too_slow = True
                    self._close(1013, WS_TOO_SLOW_DISCONNECT["reason"])
                    self._wake()  # a receive waiting gets WS_TOO_SLOW_DISCONNECT
                    raise ClientTooSlow(unsent, len(frame), limit)
            self.response_bytes += len(frame)
            self.carrier.send_data(frame)
        elif kind == "websocket.accept":
            if state != _CONNECTING:
                if state == _CLOSED:
                    raise ClientDisconnected("the WebSocket client has gone")
                raise ASGIProtocolError(f"websocket.accept in the wrong state ({state})")
            self._accept(message)
        elif kind == "websocket.close":
            if state == _OPEN:
                code = message.get("code") or 1000
                if type(code) is not int or not 1000 <= code <= 4999 or code in _LOCAL_CODES:
                    raise ASGIProtocolError(f"websocket.close with an invalid code {code!r}")
                self._close(code, str(message.get("reason") or ""))
            elif state == _CONNECTING:
                self._reject(403)
            elif state == _DENYING:
                raise ASGIProtocolError("websocket.close during a denial response")
            # closing or closed already: a second close is harmless
        elif kind == "websocket.http.response.start":
            if state != _CONNECTING or self._denial_head is not None:
                if state == _CLOSED:
                    raise ClientDisconnected("the WebSocket client has gone")
                raise ASGIProtocolError("websocket.http.response.start after the handshake")
            status = message.get("status")
            if type(status) is not int or not 200 <= status <= 999:
                raise ASGIProtocolError(f"websocket.http.response.start: bad status {status!r}")
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
            for name, value in headers:
                if bad_header(name, value):
                    raise ASGIProtocolError(f"invalid denial response header {name!r}: {value!r}")
            self._denial_head = (status, headers)
            self._state = _DENYING
        elif kind == "websocket.http.response.body":
            if state != _DENYING:
                if state == _CLOSED:
                    raise ClientDisconnected("the WebSocket client has gone")
                raise ASGIProtocolError("websocket.http.response.body without a response start")
            self._denial_body(bytes(message.get("body", b"")), bool(message.get("more_body")))
        else:
            raise ASGIProtocolError(f"unexpected ASGI message {kind!r} on a WebSocket")

    def app_finished(self, error: BaseException | None) -> None:
        self._app_done = True
        self._inbox.clear()
        if self._paused:
            self._resume()
        state = self._state
        if state == _CONNECTING:
            self._reject(500 if error is not None else 403)
        elif state == _DENYING:
            if self._denial_head is not None and error is not None:
                self._denial_head = None
                self._state = _CONNECTING
                self._reject(500)
            elif self._denial_head is not None:
                self._denial_body(b"", False)
            else:  # half-sent body
                self.carrier.abort()
                self._ended(1006, "", accepted=False)
        elif state == _OPEN:
            self._close(1011 if error is not None else 1000, "")

    # -- handshake ------------------------------------------------------------------------------

    def _accept(self, message: Message) -> None:
        scope = self.scope
        subprotocol = message.get("subprotocol")
        headers: list[tuple[bytes, bytes]] = []
        if subprotocol is not None:
            if subprotocol not in scope["subprotocols"]:
                self._reject(403)
                raise ASGIProtocolError(
                    f"websocket.accept chose subprotocol {subprotocol!r}, which the client did "
                    f"not offer ({scope['subprotocols']!r})"
                )
            allowed = self.context.config.ws_protocols
            if allowed and subprotocol not in allowed:
                logger.debug("WebSocket subprotocol %r not in ws_protocols: 403", subprotocol)
                self._reject(403)
                return
            headers.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        extensions: list[Extension] = []
        if self.context.config.ws_per_message_deflate:
            negotiated = negotiate_deflate(scope["headers"])
            if negotiated is not None:
                extensions.append(negotiated[0])
                headers.append((b"sec-websocket-extensions", negotiated[1]))
                self._deflate = True
        for name, value in message.get("headers", ()):
            name, value = bytes(name).lower(), bytes(value)
            if name in (b"sec-websocket-protocol", b"sec-websocket-extensions"):
                continue
            if bad_header(name, value):
                raise ASGIProtocolError(f"invalid websocket.accept header {name!r}: {value!r}")
            headers.append((name, value))
        self._ws = WSProtoConnection(ConnectionType.SERVER, extensions)
        self._state = _OPEN
        self.status = 101
        self.carrier.send_response(200 if self.carrier.http2 else 101, headers, False)
        config = self.context.config
        if config.ws_ping_interval_seconds is not None:
            self.carrier.set_timer("ping", config.ws_ping_interval_seconds)
        if config.websocket_timeout_seconds is not None:
            self.carrier.set_timer("lifetime", config.websocket_timeout_seconds)
        if self._log is not None:
            self._log("websocket.connected", self)
        if self._pending:
            pending = bytes(self._pending)
            self._pending = bytearray()
            self._resume()
            self.data_received(pending)

    def _reject(self, status: int) -> None:
        """Refuse the handshake with an empty ``status`` response (403, 500)."""
        self.status = status
        self.carrier.send_response(status, [(b"content-length", b"0")], True)
        self._ended(1006, "", accepted=False)

    def _denial_body(self, body: bytes, more_body: bool) -> None:
        head = self._denial_head
        if head is not None:
            self._denial_head = None
            status, headers = head
            self.status = status
            if not more_body and not any(name.lower() == b"content-length" for name, _ in headers):
                headers.append((b"content-length", str(len(body)).encode("ascii")))
            self.carrier.send_response(status, headers, not body and not more_body)
            if not body and not more_body:
                self._ended(1006, "", accepted=False)
                return
        self.response_bytes += len(body)
        self.carrier.send_data(body, not more_body)
        if not more_body:
            self._ended(1006, "", accepted=False)

    # -- frames ---------------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    self._message_part(event)
                elif isinstance(event, Ping):
                    if ws.state == ConnectionState.OPEN:
                        self._write(ws.send(event.response()))
                elif isinstance(event, Pong):
                    if self._state == _OPEN:
                        config = self.context.config
                        self.carrier.set_timer("pong", None)
                        if config.ws_ping_interval_seconds is not None:
                            self.carrier.set_timer("ping", config.ws_ping_interval_seconds)
                elif isinstance(event, CloseConnection):
                    self._close_received(event)
                    return
                if self._state != _OPEN and self._state != _CLOSING:
                    return
        except Exception as exc:  # wsproto choking on hostile input must not take us down
            logger.debug("WebSocket frame error: %r", exc, exc_info=True)
            self._fail(1002, "protocol error")

    def _message_part(self, event: TextMessage | BytesMessage) -> None:
        data = event.data
        size = self._size + len(data)
        if size > self._max_message:
            self._fail(1009, "message too big")
            return
        if self._state != _OPEN or self._app_done:
            if event.message_finished:
                self._size = 0
                self._parts.clear()
            else:
                self._size = size
            return
        if event.message_finished:
            parts = self._parts
            if parts:
                parts.append(data)
                data = "".join(parts) if event.__class__ is TextMessage else b"".join(parts)
                parts.clear()
            self._size = 0
            if event.__class__ is TextMessage:
                self._inbox.append({"type": "websocket.receive", "text": data})
            else:
                self._inbox.append({"type": "websocket.receive", "bytes": data})
            if len(self._inbox) >= _PAUSE_AT:
                self._pause()
            self._wake()
        else:
            self._size = size
            self._parts.append(data)

    def _close_received(self, event: CloseConnection) -> None:
        ws = self._ws
        assert ws is not None
        code, reason = int(event.code), event.reason or ""
        if ws.state == ConnectionState.REMOTE_CLOSING:
            # the client closes: answer with its code (1005, no code, is answered empty)
            self._write(ws.send(event.response()))
            self._cancel_timers()
            self.carrier.close()
            self._ended(code, reason, accepted=True)
        elif ws.state == ConnectionState.CLOSED:
            # the answer to our close frame
            self._cancel_timers()
            self.carrier.close()
            self._ended(code, reason, accepted=True)
        else:
            # wsproto's answer to a frame it could not parse: 1002, or 1007 for bad UTF-8; its
            # reason is an exception's text, kept for the debug log and not sent
            logger.debug("WebSocket protocol error %s: %s", code, reason)
            self._fail(code, _FAIL_REASONS.get(code, "protocol error"))

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with ``code``, then end."""
        ws = self._ws
        if ws is not None and ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            try:
                self._write(ws.send(CloseConnection(code=code, reason=reason)))
            except Exception:  # a code wsproto refuses to send
                self._write(ws.send(CloseConnection(code=1002)))
        self._cancel_timers()
        self.carrier.close()
        self._ended(code, reason, accepted=True)

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake from our side."""
        ws = self._ws
        assert ws is not None
        self._state = _CLOSING
        self.carrier.set_timer("ping", None)
        self.carrier.set_timer("pong", None)
        self.carrier.set_timer("lifetime", None)
        self._write(ws.send(CloseConnection(code=code, reason=reason or None)))
        self.carrier.set_timer("close", CLOSE_TIMEOUT_SECONDS)

    # -- helpers --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.response_bytes += len(data)
        self.carrier.send_data(data)

    def _wake(self) -> None:
        io = self.io
        if io is not None:
            io.wake(self)

    def _ended(self, code: int, reason: str, *, accepted: bool) -> None:
        was = self._state
        self._state = _CLOSED
        self._pending = bytearray()
        self._parts.clear()
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        if self._paused:
            self._resume()
        if self._log is not None and was != _CLOSED:
            self._log("websocket.disconnected" if accepted else "websocket.rejected", self)
        self._wake()

    def _cancel_timers(self) -> None:
        set_timer = self.carrier.set_timer
        for name in ("ping", "pong", "lifetime", "close"):
            set_timer(name, None)

    def _pause(self) -> None:
        if not self._paused and self._flow is not None:
            self._paused = True
            self._flow[0]()

    def _resume(self) -> None:
        if self._paused and self._flow is not None:
            self._paused = False
            self._flow[1]()


class WebSocketConnection(Connection):
    """A WebSocket on an upgraded HTTP/1.1 connection: the carrier of one
    :class:`WebSocketStream`. Made by ``HTTP11Connection`` through
    :meth:`from_http11_upgrade`."""

    http2 = False

    def __init__(self, io: ConnectionIO, context: ServerContext, key: bytes = b"") -> None:
        super().__init__(io, context)
        self._key = key
        self.stream: WebSocketStream | None = None

    @classmethod
    def from_http11_upgrade(
        cls,
        io: ConnectionIO,
        context: ServerContext,
        *,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        trailing: bytes,
    ) -> WebSocketConnection:
        """Take over ``io`` for the upgrade request (``target``, ``headers`` as h11 gives them):
        answer 400/426 for a bad handshake, else start the app on a :class:`WebSocketStream`
        and feed it ``trailing`` (bytes read after the request head)."""
        key = b""
        for name, value in headers:
            if name.lower() == b"sec-websocket-key":
                key = value.strip()
        connection = cls(io, context, key)
        io.switch_protocol(connection)
        problem = handshake_problem(headers, http2=False, config=context.config)
        if problem is not None:
            status, reason, extra = problem
            logger.debug("WebSocket handshake refused (%s): %s", status, reason.decode())
            connection.send_response(
                status,
                [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(reason)).encode("ascii")),
                    *extra,
                ],
                False,
            )
            io.write(reason)
            io.close()
            return connection
        scope = websocket_scope(
            context,
            io,
            target=target,
            headers=headers,
            http_version=http_version,
            subprotocols=offered_subprotocols(headers),
        )
        stream = connection.stream = WebSocketStream(context, scope, connection, io)
        io.start_stream(stream)
        if trailing:
            stream.data_received(trailing)
        return connection

    # -- Connection -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.data_received(data)

    def connection_lost(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.connection_lost()

    def timeout(self, name: str) -> None:
        stream = self.stream
        if stream is not None:
            stream.timeout(name)

    def shutdown(self, websocket_close_code: int = 1001) -> None:
        stream = self.stream
        if stream is None:
            self.io.close()
        else:
            stream.shutdown(websocket_close_code)

    # -- WebSocketCarrier -----------------------------------------------------------------------

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        config = self.context.config
        if status == 101:
            head = [
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-accept: ",
                generate_accept_token(self._key),
                b"\r\n",
            ]
        else:
            head = [status_line(status)]
        if config.server_header is not None:
            head.append(b"server: %s\r\n" % config.server_header.encode("latin-1"))
        if config.date_header:
            head.append(b"date: %s\r\n" % date_value())
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        if status != 101:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self.io.write(b"".join(head))
        if end:
            self.io.close()

    def send_data(self, data: bytes, end: bool = False) -> None:
        if data:
            self.io.write(data)
        if end:
            self.io.close()

    def close(self) -> None:
        self.io.close()

    def abort(self) -> None:
        self.io.abort()

    def set_timer(self, name: str, seconds: float | None) -> None:
        self.io.set_timer(name, seconds)

    def unsent_bytes(self) -> int:
        return self.io.write_buffer_size()

    def pause_reading(self) -> None:
        self.io.pause_reading()

    def resume_reading(self) -> None:
        self.io.resume_reading()
