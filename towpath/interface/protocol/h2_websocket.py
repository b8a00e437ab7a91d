"""WebSocket over HTTP/2 (RFC 8441): an extended CONNECT stream carrying one WebSocket.

:func:`open_websocket` answers a ``CONNECT`` with ``:protocol websocket`` that
:class:`~towpath.interface.protocol.h2.H2Connection` received: a bad handshake gets its
refusal, a good one a :class:`WebSocketChannel` (the stream's carrier) and a
:class:`~towpath.interface.protocol.websocket.WebSocketStream` (the ASGI side) on it.

The connection drives a channel as it drives an ``H2Stream``: ``data_received``,
``end_received``, ``reset_received``, ``connection_lost``, ``timeout`` and ``shutdown`` from its
events, and its output (:class:`~towpath.interface.protocol.h2_output.H2Output`) sends the
pending bytes (``pending``, ``refill()``, ``ending()``, ``completed()``, ``set_blocked()``,
``lost()``: the members the two kinds of channel share), within the windows and the socket's
back-pressure. The channel's timers are the connection's, named ``"ws:<stream id>:<name>"``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from towpath.interface.protocol.scope import websocket_scope
from towpath.interface.protocol.websocket import (
    WebSocketStream,
    handshake_problem,
    offered_subprotocols,
)

if TYPE_CHECKING:
    from towpath.interface.protocol.h2_seam import H2Host

__all__ = ["WebSocketChannel", "open_websocket"]

logger = logging.getLogger("towpath.interface")

#: frames queued behind ones the client's window holds up (answers to its pings, mostly) past
#: which its data is no longer acknowledged: its window closes, and it can ask for nothing more
#: until it reads
QUEUED_HOLD_BYTES = 64 * 1024


def open_websocket(
    connection: H2Host,
    stream_id: int,
    path: bytes,
    scheme: bytes,
    headers: list[tuple[bytes, bytes]],
) -> WebSocketChannel | None:
    """The WebSocket an extended CONNECT on ``stream_id`` opens, for the connection to start;
    None if the handshake was bad (refused: 426 and the like)."""
    problem = handshake_problem(headers, http2=True, config=connection.context.config)
    if problem is not None:
        status, _, extra = problem
        connection.simple_response(stream_id, status, extra)
        return None
    scope = websocket_scope(
        connection.context,
        connection.io,
        target=path,
        headers=headers,
        http_version="2",
        subprotocols=offered_subprotocols(headers),
        scheme=scheme.decode("latin-1"),
    )
    return WebSocketChannel(connection, stream_id, scope)


class WebSocketChannel:
    """The ``WebSocketCarrier`` of a WebSocket on an HTTP/2 stream: frames go out as DATA
    within the stream's window, the accept is ``:status 200``, a clean end is END_STREAM, an
    abort RST_STREAM(CANCEL). ``pause_reading`` stops acknowledging received data, so the
    client's window closes while the app falls behind; so does a client that does not read
    while its pings are answered (past :data:`QUEUED_HOLD_BYTES` of frames waiting).

    END_STREAM from the client is its TCP FIN (RFC 8441 4): the WebSocket ends, and our half
    of the stream ends too (END_STREAM once what is queued went out, or RST_STREAM(CANCEL)
    when no complete response was given)."""

    http2 = True

    def __init__(self, connection: H2Host, stream_id: int, scope: dict[str, Any]) -> None:
        self.connection = connection
        self.io = connection.io
        self.stream_id = stream_id
        self.blocked = False
        self.paused = False
        self.pending: memoryview | None = None
        #: frames sent while ``pending`` waited, joined once it went (appending them to it
        #: would copy it again for every pong)
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self.trailer_headers: list[tuple[bytes, bytes]] | None = None
        self._end = False
        self._accepted = False
        self.complete = False  # END_STREAM sent
        self._remote_done = False  # END_STREAM received
        self.gone = False
        self._unacked = 0
        self._timers: set[str] = set()
        #: the ASGI side (made last: it looks at this carrier)
        self.ws = WebSocketStream(connection.context, scope, self, connection.io)

    # -- WebSocketCarrier ------------------------------------------------------------------------

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.gone or self.complete:
            return
        connection = self.connection
        self._accepted = status == 200
        try:
            connection.h2.send_headers(
                self.stream_id, connection.response_headers(status, headers), end_stream=end
            )
        except H2Error as exc:
            logger.debug("HTTP/2 WebSocket response on stream %d: %s", self.stream_id, exc)
            self.abort()
            return
        if end:
            self.completed()
        connection.output.flush_soon()

    def send_data(self, data: bytes, end: bool = False) -> None:
        if self.gone or self.complete:
            return
        if data:
            if self.pending is None:
                self.pending = memoryview(data)
            else:
                self._queued.append(data)
                self._queued_bytes += len(data)
        if end:
            self._end = True
        output = self.connection.output
        output.drain(self)
        output.flush_soon()

    def close(self) -> None:
        self.send_data(b"", end=True)

    def abort(self) -> None:
        if not self.gone:
            connection = self.connection
            connection.reset_channel(self, ErrorCodes.CANCEL)
            connection.output.flush_soon()

    def set_timer(self, name: str, seconds: float | None) -> None:
        if seconds is None:
            if name not in self._timers:
                return
            self._timers.discard(name)
        else:
            if self.gone:
                return
            self._timers.add(name)
        self.io.set_timer(f"ws:{self.stream_id}:{name}", seconds)

    def unsent_bytes(self) -> int:
        """This stream's frames not handed to h2 yet (its window, the socket's back-pressure
        or its turn holds them). What h2 and the transport hold is the connection's, bounded
        by the transport's high-water mark (``h2_output``), and not counted here."""
        pending = self.pending
        return self._queued_bytes + (len(pending) if pending is not None else 0)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self._acknowledge_held()

    def _holding(self) -> bool:
        """Whether the client's data is left unacknowledged (its window closing)."""
        return self.paused or self._queued_bytes > QUEUED_HOLD_BYTES

    def _acknowledge_held(self) -> None:
        if self._unacked and not self.gone and not self._holding():
            connection = self.connection
            connection.h2.acknowledge_received_data(self._unacked, self.stream_id)
            self._unacked = 0
            connection.output.flush_soon()

    # -- from the connection ---------------------------------------------------------------------

    def data_received(self, data: bytes, flow_length: int) -> None:
        if self._holding():
            self._unacked += flow_length
        else:
            self.connection.h2.acknowledge_received_data(flow_length, self.stream_id)
        if data:
            self.ws.data_received(data)

    def end_received(self) -> None:
        # the client sends no more: after its close frame that is the orderly end, else a drop
        self._remote_done = True
        self.ws.connection_lost()
        if self.complete:
            self.lost()
        elif not self._end:
            # our half ends too: cleanly after an accept, else (no response, or half a
            # denial) with a reset, as HTTP/1.1 closes the socket at the client's EOF
            if self._accepted:
                self.close()
            else:
                self.abort()

    def reset_received(self) -> None:
        self.lost()

    def connection_lost(self) -> None:
        self.lost()

    def timeout(self, name: str) -> None:
        self._timers.discard(name)
        self.ws.timeout(name)

    def shutdown(self, code: int) -> None:
        self.ws.shutdown(code)

    def refill(self) -> memoryview | None:
        """The frames queued behind the pending ones, now that those went (None: none)."""
        if not self._queued:
            return None
        data = b"".join(self._queued)
        self._queued.clear()
        self._queued_bytes = 0
        self._acknowledge_held()
        return memoryview(data)

    def ending(self) -> bool:
        return self._end and not self._queued

    def completed(self) -> None:
        self.complete = True
        if self._remote_done:
            self.lost()
        elif not self._accepted:
            # a denial response is complete: the client's half of the stream is not needed
            self.connection.reset_channel(self, ErrorCodes.NO_ERROR)

    def lost(self) -> None:
        """The stream is over (reset either way, ended both ways, or the connection went):
        the WebSocket learns it, and the connection forgets the stream."""
        if self.gone:
            return
        self.gone = True
        self.pending = None
        self._queued.clear()
        self._queued_bytes = 0
        if self._unacked:  # held back while paused: the connection's window needs it back
            self.connection.h2.acknowledge_received_data(self._unacked, self.stream_id)
            self._unacked = 0
        self.set_blocked(False)
        for name in self._timers:
            self.io.set_timer(f"ws:{self.stream_id}:{name}", None)
        self._timers.clear()
        self.ws.connection_lost()  # nothing if it ended already
        self.connection.release(self)

    def set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        ws = self.ws
        if ws.blocked != blocked:
            ws.blocked = blocked
            if not blocked:
                self.io.wake(ws)
