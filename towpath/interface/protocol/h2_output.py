"""How an HTTP/2 connection writes: response bodies within the flow-control windows *and* the
socket's back-pressure, fairly across streams, in few writes.

A window only says what the client is willing to take; a client that opens its windows to
2^31-1 and then never reads would otherwise have every body handed to h2, and from h2 to the
transport's buffer, whole (a 500 MiB response cost 1.3 GB of memory). So a body is moved into h2
one frame at a time, and only while:

* the stream's and the connection's windows allow it (a WINDOW_UPDATE or SETTINGS change
  resumes the stream);
* the transport is not paused: over its high-water mark it calls ``pause_writing`` and no more
  is handed over (nor read: a client that does not read has nothing more read from it) until
  ``resume_writing``;
* the stream has not used up its turn: :data:`QUANTUM_BYTES` each, then it waits behind the
  other streams for the next loop turn, so one large body neither starves the other streams of
  this connection nor the event loop.

Until its body is all handed over the channel (:class:`~towpath.interface.protocol.h2.H2Stream`
or :class:`~towpath.interface.protocol.h2_websocket.WebSocketChannel`) is ``blocked``: the app's
``send`` waits. What h2 holds is written once per loop turn (timer ``"flush"``, so the responses
of many streams leave in one ``io.write``), or at once when it reaches :data:`FLUSH_BYTES`. So
per connection at most about the transport's high-water mark plus :data:`FLUSH_BYTES` is held
beyond the apps' own bodies.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

if TYPE_CHECKING:
    from collections.abc import Mapping

    from h2.connection import H2Connection as H2Protocol

    from towpath.interface.protocol.base import ConnectionIO

__all__ = ["FLUSH_BYTES", "QUANTUM_BYTES", "H2Channel", "H2Output", "OutputHost"]

logger = logging.getLogger("towpath.interface")

#: what h2 may hold unwritten: past it, it is written at once rather than after the loop turn
FLUSH_BYTES = 64 * 1024
#: body bytes a stream hands over before the other streams (and the event loop) get a turn
QUANTUM_BYTES = 256 * 1024
#: the timer of the once-per-turn write
FLUSH = "flush"


class H2Channel(Protocol):
    """What the output sees of an HTTP/2 stream with a body to send (a request's
    :class:`~towpath.interface.protocol.h2_stream.H2Stream`, a WebSocket's
    :class:`~towpath.interface.protocol.h2_websocket.WebSocketChannel`)."""

    stream_id: int
    #: body waiting for the windows, the socket or its turn (None: none)
    pending: memoryview | None
    #: trailers to end the stream with once the body went (None: none)
    trailer_headers: list[tuple[bytes, bytes]] | None
    #: reset (either way) or the connection was lost: nothing more is sent
    gone: bool
    #: END_STREAM went out
    complete: bool

    def refill(self) -> memoryview | None:
        """What was queued behind ``pending``, now that it went (None: nothing)."""

    def ending(self) -> bool:
        """The sender is done: END_STREAM may go with the last of the body."""

    def set_blocked(self, blocked: bool) -> None:
        """Body remains (the sender waits) or not."""

    def completed(self) -> None:
        """END_STREAM went out."""

    def lost(self) -> None:
        """The stream was reset or the connection lost."""


class OutputHost(Protocol):
    """What the output uses of its connection."""

    h2: H2Protocol
    io: ConnectionIO

    @property
    def closed(self) -> bool: ...

    @property
    def streams(self) -> Mapping[int, H2Channel]: ...

    def reset_channel(self, channel: H2Channel, code: ErrorCodes) -> None: ...


class H2Output:
    """The writing side of one :class:`~towpath.interface.protocol.h2.H2Connection`."""

    __slots__ = ("_ready", "_turn_pending", "_unflushed", "connection", "h2", "io", "paused")

    def __init__(self, connection: OutputHost) -> None:
        self.connection = connection
        self.h2 = connection.h2
        self.io = connection.io
        #: the transport is over its high-water mark: nothing more is handed to h2, nothing read
        self.paused = False
        #: body bytes handed to h2 since the last write
        self._unflushed = 0
        self._turn_pending = False
        #: channels with body left that wait for their turn (their window is open), in order
        self._ready: dict[int, H2Channel] = {}

    def __repr__(self) -> str:
        state = "paused" if self.paused else "writing"
        return f"<H2Output {state}, {len(self._ready)} stream(s) waiting for a turn>"

    # -- the transport's back-pressure ----------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        self.io.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if not self.connection.closed:
            self.io.resume_reading()
        if self._ready:
            self.flush_soon()

    # -- bodies ---------------------------------------------------------------------------------

    def drain(self, channel: H2Channel) -> None:
        """Hand h2 what the windows, the socket and the channel's turn allow of its pending
        body; end the stream (with trailers, if any) once all of it went and the sender is
        done. The channel stays ``blocked`` while body remains."""
        if channel.gone or channel.complete:
            return
        h2 = self.h2
        stream_id = channel.stream_id
        data = channel.pending
        trailers = channel.trailer_headers
        budget = QUANTUM_BYTES
        ended = False  # END_STREAM went with the last DATA
        try:
            while data is not None:
                if self.paused or budget <= 0:
                    # wait behind the others: the next turn, or once the socket drains
                    ready = self._ready
                    ready.pop(stream_id, None)
                    ready[stream_id] = channel
                    if not self.paused:
                        self.flush_soon()
                    break
                window = h2.local_flow_control_window(stream_id)
                if window <= 0:
                    break  # a WINDOW_UPDATE or a SETTINGS change resumes it
                size = min(window, h2.max_outbound_frame_size, budget)
                if size >= len(data):
                    size = len(data)
                    after = channel.refill()  # what was queued behind it, if anything
                    ended = after is None and trailers is None and channel.ending()
                    h2.send_data(stream_id, data, end_stream=ended)
                    data = after
                else:
                    h2.send_data(stream_id, data[:size])
                    data = data[size:]
                budget -= size
                self._unflushed += size
                if self._unflushed >= FLUSH_BYTES:
                    self.flush()  # may pause us (the transport went over its mark)
            channel.pending = data
            if data is None and channel.ending():
                if trailers is not None:
                    h2.send_headers(stream_id, trailers, end_stream=True)
                elif not ended:  # the body ran out before the sender ended: an empty DATA
                    h2.send_data(stream_id, b"", end_stream=True)
                channel.set_blocked(False)
                channel.completed()
                return
        except H2Error as exc:
            logger.debug("HTTP/2 send on stream %d failed: %s", stream_id, exc)
            self.connection.reset_channel(channel, ErrorCodes.INTERNAL_ERROR)
            return
        channel.set_blocked(data is not None)

    def drain_all(self) -> None:
        """A window of the connection (or the initial window of every stream) grew."""
        for channel in list(self.connection.streams.values()):
            if channel.pending is not None:
                self.drain(channel)

    # -- writing --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what h2 holds now."""
        self._unflushed = 0
        data = self.h2.data_to_send()
        if data:
            self.io.write(data)

    def flush_soon(self) -> None:
        """Write what h2 holds once this loop turn is over (timer ``"flush"`` of 0 s)."""
        if not self._turn_pending:
            self._turn_pending = True
            self.io.set_timer(FLUSH, 0)

    def turn(self) -> None:
        """Timer ``"flush"``: every waiting stream gets its turn while the socket takes it,
        then what h2 holds is written."""
        self._turn_pending = False
        if self._ready and not self.paused:
            channels = list(self._ready.values())
            self._ready = {}
            for index, channel in enumerate(channels):
                if self.paused:  # the rest keep their place, ahead of those that had a turn
                    waiting = {c.stream_id: c for c in channels[index:]}
                    waiting.update(self._ready)
                    self._ready = waiting
                    break
                self.drain(channel)
        self.flush()
