"""HTTP/2 on the h2 library: one :class:`H2Connection` per TCP (or TLS) connection, one
:class:`~towpath.interface.protocol.h2_stream.H2Stream` per request stream, and (RFC 8441) a
WebSocket per extended CONNECT stream (:mod:`towpath.interface.protocol.h2_websocket`).

h2 parses frames and keeps the HTTP/2 state machine and flow-control windows; this module maps
its events to ASGI streams and the streams' sends back to frames. Everything h2 queues is written
in one ``io.write`` per batch: after a whole ``data_received`` chunk, and once per loop turn
after the apps' sends (:mod:`towpath.interface.protocol.h2_output`).

Flow control runs both ways. Inbound, received DATA is acknowledged only as the app takes it
(``receive``), so a slow app makes the client wait instead of this process buffering. Outbound,
a body is sent as far as the stream's window *and* the socket allow; the rest waits, the stream
is ``blocked`` (the app's ``send`` waits), and a WINDOW_UPDATE, a SETTINGS change or the socket
draining resumes it (:mod:`~towpath.interface.protocol.h2_output`). A connection whose output
does not drain is not read from either.

What a client may cost is bounded (:mod:`towpath.interface.protocol.h2_limits`): resets and
control frames are counted in token buckets, and one over them gets ``GOAWAY(ENHANCE_YOUR_CALM)``
("Rapid Reset", PING and SETTINGS floods); a request header list over ``max_header_bytes`` or
``max_header_count`` gets 431 on its stream.

h2 refuses every send once a GOAWAY has gone either way, but RFC 9113 (6.8) lets the streams
already open finish. So our graceful GOAWAY is written beside h2 (a hyperframe frame), and after
a client's NO_ERROR GOAWAY h2's connection state is put back to open while in-flight streams
finish (:func:`towpath.compat.h2_reopen_after_goaway`: no public h2 API does it). A
:class:`H2Connection` made by HTTP/1.1 (prior knowledge, ``Upgrade: h2c``) gets no
``connection_made``; it sends its preface on the first bytes (or at the upgrade) instead.

Timers: ``"keep-alive"`` closes a connection with no open stream (armed whenever the last stream
ends; a stream opening does not disarm it, the timer is ignored while streams are open, which
saves two timer calls per request); ``"flush"`` (0 s) is the once-per-turn write of the output;
``"linger"`` closes a connection a moment after its ``GOAWAY(ENHANCE_YOUR_CALM)``, and
``"abort"`` cuts one whose client does not take what is left after it closed;
``"ws:<id>:<name>"`` are the timers of the WebSocket on stream ``<id>``, handed to its channel.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection as H2Protocol
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import GoAwayFrame

from towpath.compat import h2_reopen_after_goaway
from towpath.interface.protocol.base import (
    ASGIProtocolError,
    Connection,
    ConnectionIO,
    ServerContext,
)
from towpath.interface.protocol.h2_limits import FloodGuard, decoder_limit, header_list_problem
from towpath.interface.protocol.h2_output import FLUSH, H2Channel, H2Output
from towpath.interface.protocol.h2_request import MalformedRequest, read_request_head
from towpath.interface.protocol.h2_stream import CONNECTION_HEADERS, H2Stream
from towpath.interface.protocol.headers import bad_header, date_value
from towpath.interface.protocol.scope import http_scope

if TYPE_CHECKING:
    from towpath.interface.protocol.h2_websocket import WebSocketChannel

__all__ = ["H2Connection", "H2Stream"]

logger = logging.getLogger("towpath.interface")

#: h2 checks no header block itself: request heads are checked by ``read_request_head`` in one
#: pass (h2's nine passes cost about 15% per request), and response heads are made valid by
#: ``response_headers`` (lowercased; connection-specific, pseudo and CR/LF/NUL refused)
_H2_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)

#: request headers of an ``Upgrade: h2c`` request that belonged to the HTTP/1.1 hop only
_UPGRADE_HEADERS = frozenset((b"connection", b"upgrade", b"http2-settings", b"keep-alive"))
_FLOW_SETTINGS = (SettingCodes.INITIAL_WINDOW_SIZE, SettingCodes.MAX_FRAME_SIZE)
#: the statuses an app may answer with (1xx are not ASGI responses)
_STATUS_BYTES = {status: str(status).encode("ascii") for status in range(200, 600)}
_KEEP_ALIVE = "keep-alive"
#: a closing connection whose peer does not take what is left is cut after the keep-alive time
_ABORT = "abort"
#: after a GOAWAY(ENHANCE_YOUR_CALM) the connection reads no more but closes only this much
#: later: closing with the client's bytes unread makes the kernel reset the connection at once,
#: dropping the GOAWAY if it is not on the wire yet (nginx's lingering close waits too)
_LINGER = "linger"
_LINGER_SECONDS = 1.0
#: frames that are counted against the client's control-frame bucket as they come: cheap to
#: send, and they cost us an answer or work (PRIORITY only outside a HEADERS)
_CONTROL_EVENTS = (
    PingReceived,
    PingAckReceived,
    SettingsAcknowledged,
    PriorityUpdated,
    UnknownFrameReceived,
)


if TYPE_CHECKING:
    #: what an open stream id maps to: a request, or a WebSocket (RFC 8441)
    _Channel = H2Stream | WebSocketChannel


class H2Connection(Connection):
    """An HTTP/2 connection (TLS with ALPN h2, prior knowledge, or after ``Upgrade: h2c``)."""

    def __init__(self, io: ConnectionIO, context: ServerContext) -> None:
        super().__init__(io, context)
        config = context.config
        self.h2 = h2 = H2Protocol(config=_H2_CONFIG)
        frame_size = min(max(config.h2_max_inbound_frame_size, 16384), 16777215)
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_bytes,
                SettingCodes.MAX_FRAME_SIZE: frame_size,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        # h2 applies these itself only when an acknowledged SETTINGS changes them (ours are
        # its initial values: never), so they are set here (public attributes of h2's
        # connection and of its hpack decoder). HPACK decodes up to twice the advertised
        # header-list limit: a list a little over it gets a 431 and the connection goes on
        h2.max_inbound_frame_size = frame_size
        h2.decoder.max_header_list_size = decoder_limit(config)
        #: open exchanges by stream id; an HTTP stream stays until its app returned, a
        #: WebSocket until its stream ended both ways
        self.streams: dict[int, _Channel] = {}
        self._started = False
        self._closed = False
        #: set once a GOAWAY went out (or the client's came): streams above it are refused, and
        #: the connection closes when the last stream is released
        self._last_stream_id: int | None = None
        self._keep_alive_seconds = config.keep_alive_timeout_seconds
        server = config.server_header
        self._server: list[tuple[bytes, bytes]] = (
            [(b"server", server.encode("latin-1"))] if server else []
        )
        self._date = config.date_header
        #: bodies out within the windows and the socket's back-pressure, one write per turn
        self.output = H2Output(self)
        #: what the client's resets and control frames may cost
        self.flood = FloodGuard(config)

    @property
    def closed(self) -> bool:
        """Closing or closed: nothing more is read."""
        return self._closed

    @classmethod
    def from_h2c_upgrade(
        cls,
        io: ConnectionIO,
        context: ServerContext,
        *,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        settings_header: bytes,
        trailing: bytes = b"",
    ) -> H2Connection:
        """Take over after HTTP/1.1 answered ``101 Switching Protocols`` to ``Upgrade: h2c``:
        send the server preface, serve the upgrading request (which had no body) as stream 1,
        then go on with the bytes read after its head (the client's preface and frames)."""
        self = cls(io, context)
        io.switch_protocol(self)
        self._started = True
        try:
            self.h2.initiate_upgrade_connection(settings_header)
        except (H2Error, HyperframeError, ValueError, binascii.Error) as exc:
            # not base64, not a SETTINGS payload (hyperframe's error), or a bad setting (h2's)
            logger.debug("h2c upgrade with a bad HTTP2-Settings header: %s", exc)
            self._fail()
            return self
        request_headers = [(n, v) for n, v in headers if n not in _UPGRADE_HEADERS]
        scope = http_scope(
            context, io, method=method, target=target, headers=request_headers, http_version="2"
        )
        stream = H2Stream(self, 1, scope, method == "HEAD", ended=True)
        self.streams[1] = stream
        self.output.flush()
        io.start_stream(stream)
        if trailing:
            self.data_received(trailing)
        return self

    # -- Connection -----------------------------------------------------------------------------

    def connection_made(self) -> None:
        self._start()

    def _start(self) -> None:
        self._started = True
        self.h2.initiate_connection()
        self.output.flush()
        self.io.set_timer(_KEEP_ALIVE, self._keep_alive_seconds)

    def data_received(self, data: bytes) -> None:
        if not self._started:
            self._start()
        if self._closed:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            logger.debug("HTTP/2 protocol error from %s: %s", self.io.client, exc)
            self._fail()
            return
        streams = self.streams
        flood = self.flood
        request_priority = None  # the PRIORITY of a HEADERS comes as an event of its own too
        for event in events:
            if isinstance(event, RequestReceived):
                request_priority = event.priority_updated
                if not self._request(event) and not flood.control_frame():
                    self._calm("too many refused requests")
                    return
            elif isinstance(event, DataReceived):
                channel = streams.get(event.stream_id)
                if channel is None:  # a stream we are done with: its bytes are given back
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    channel.data_received(event.data, event.flow_controlled_length)
                if not event.data and event.stream_ended is None and not flood.control_frame():
                    self._calm("too many empty DATA frames")
                    return
            elif isinstance(event, StreamEnded):
                channel = streams.get(event.stream_id)
                if channel is not None:
                    channel.end_received()
            elif isinstance(event, WindowUpdated):
                if event.stream_id:
                    channel = streams.get(event.stream_id)
                    if channel is not None and channel.pending is not None:
                        self.output.drain(channel)
                else:
                    self.output.drain_all()
            elif isinstance(event, StreamReset):
                # the client's RST_STREAM, or h2's for a stream error the client made: both
                # end a stream whose app was started ("MadeYouReset", CVE-2025-8671)
                if not flood.reset():
                    self._calm("too many stream resets (Rapid Reset, CVE-2023-44487)")
                    return
                channel = streams.get(event.stream_id)
                if channel is not None:
                    channel.reset_received()
            elif isinstance(event, RemoteSettingsChanged):
                if not flood.control_frame():
                    self._calm("too many SETTINGS frames")
                    return
                if any(code in event.changed_settings for code in _FLOW_SETTINGS):
                    self.output.drain_all()
            elif isinstance(event, ConnectionTerminated):
                self._terminated(event)
                if self._closed:
                    return
            elif (
                isinstance(event, _CONTROL_EVENTS)
                and event is not request_priority
                and not flood.control_frame()
            ):
                self._calm(f"too many control frames ({type(event).__name__})")
                return
        self.output.flush()

    def connection_lost(self) -> None:
        self._closed = True
        self.io.set_timer(_KEEP_ALIVE, None)
        for channel in list(self.streams.values()):
            channel.connection_lost()

    def pause_writing(self) -> None:
        self.output.pause()

    def resume_writing(self) -> None:
        self.output.resume()

    def timeout(self, name: str) -> None:
        if name == FLUSH:
            self.output.turn()
        elif name == _KEEP_ALIVE:
            if not self.streams and not self._closed:
                self._goaway()
                self._close()
        elif name.startswith("ws:"):
            _, stream_id, inner = name.split(":", 2)
            channel = self.streams.get(int(stream_id))
            if channel is not None:
                channel.timeout(inner)
        elif name == _LINGER:
            self._close(force=True)
        elif name == _ABORT:
            self.io.abort()

    def shutdown(self, websocket_close_code: int = 1001) -> None:
        if self._closed:
            return
        if not self._started:
            self._close()
            return
        if self._last_stream_id is None:
            self._goaway()
        for channel in list(self.streams.values()):
            channel.shutdown(websocket_close_code)
        if not self.streams:
            self._close()
        else:
            self.output.flush()  # the close frames go out now, not after the turn

    # -- requests -------------------------------------------------------------------------------

    def _request(self, event: RequestReceived) -> bool:
        """Serve (or answer) a request; False when it was refused unheard: after our GOAWAY,
        malformed, or a header list over the limits (431)."""
        stream_id = event.stream_id
        assert stream_id is not None
        h2 = self.h2
        if self._last_stream_id is not None and stream_id > self._last_stream_id:
            h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return False
        fields = event.headers or []
        context = self.context
        problem = header_list_problem(fields, context.config)
        if problem is not None:
            # RFC 9113 10.5.1: a 431 on this stream; HPACK decoded the whole block, so the
            # connection goes on for the other streams
            logger.debug("HTTP/2 request on stream %d refused: %s", stream_id, problem)
            self.simple_response(stream_id, 431)
            return False
        try:
            head = read_request_head(fields)
        except MalformedRequest as exc:
            logger.debug("malformed HTTP/2 request on stream %d: %s", stream_id, exc)
            h2.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return False
        method, path, scheme, protocol = head.method, head.path, head.scheme, head.protocol
        content_length, headers = head.content_length, head.headers
        if method == b"CONNECT":
            if protocol is not None and protocol.lower() == b"websocket" and path and scheme:
                # a peer module (it needs wsproto), imported when first needed
                from towpath.interface.protocol.h2_websocket import open_websocket

                channel = open_websocket(self, stream_id, path, scheme, headers)
                if channel is not None:
                    self.streams[stream_id] = channel
                    self.io.start_stream(channel.ws)
            else:
                self.simple_response(stream_id, 501)
            return True
        assert path is not None  # read_request_head made sure
        scope = http_scope(
            context,
            self.io,
            method=method.decode("latin-1"),
            target=path,
            headers=headers,
            http_version="2",
            scheme=scheme.decode("latin-1") if scheme is not None else None,
        )
        ended = event.stream_ended is not None
        stream = H2Stream(self, stream_id, scope, method == b"HEAD", ended=ended)
        limit = context.config.max_body_bytes
        if limit is not None and content_length is not None and _over(content_length, limit):
            stream.server_answered(413, reset=not event.stream_ended)
            return True
        self.streams[stream_id] = stream
        self.io.start_stream(stream)
        return True

    # -- responses ------------------------------------------------------------------------------

    def response_headers(self, status: int, headers: Any) -> list[tuple[bytes, bytes]]:
        """The HEADERS of a response: ``:status``, ``server``/``date`` unless the app gave its
        own, the app's headers lowercased, minus those HTTP/2 forbids."""
        status_bytes = _STATUS_BYTES.get(status)
        if status_bytes is None:
            raise ASGIProtocolError(f"invalid response status {status!r}")
        head = [(b":status", status_bytes)]
        server = self._server
        date = self._date
        try:
            for name, value in headers:
                name = bytes(name).lower()
                value = bytes(value)
                if name in CONNECTION_HEADERS or name[:1] == b":":
                    continue
                if bad_header(name, value):
                    # h2 would send it (outbound validation is off for speed); a proxy turning
                    # it back into HTTP/1.1 must never see a CR, LF or NUL
                    raise ASGIProtocolError(f"invalid response header {name!r}: {value!r}")
                if name == b"server":
                    server = []
                elif name == b"date":
                    date = False
                head.append((name, value))
        except (TypeError, ValueError) as exc:
            raise ASGIProtocolError(
                f"response headers must be an iterable of [bytes, bytes] pairs: {exc}"
            ) from None
        if server:
            head[1:1] = server
        if date:
            head.insert(1, (b"date", date_value()))
        return head

    def simple_response(
        self, stream_id: int, status: int, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """An empty response the server gives itself (413, 500, 501, a WebSocket refusal). A
        client still sending its request is then asked to stop with ``RST_STREAM(NO_ERROR)``
        (RFC 9113 8.1): nothing more of it will be read. h2 knows whether it still is (an
        END_STREAM read with the request may have no event yet): it refuses to reset a stream
        closed both ways (``StreamClosedError``)."""
        headers = [(b"content-length", b"0")]
        if extra:
            headers += extra
        h2 = self.h2
        try:
            h2.send_headers(stream_id, self.response_headers(status, headers), end_stream=True)
            with contextlib.suppress(StreamClosedError):  # the client had ended its request
                h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        except H2Error as exc:
            logger.debug("HTTP/2 %d response on stream %d: %s", status, stream_id, exc)

    def reset_channel(self, channel: H2Channel, code: ErrorCodes) -> None:
        """RST_STREAM ``channel`` with ``code``; it is lost."""
        with contextlib.suppress(H2Error):
            self.h2.reset_stream(channel.stream_id, code)
        channel.lost()

    # -- the connection's end -------------------------------------------------------------------

    def release(self, channel: H2Channel) -> None:
        """The exchange on ``channel`` is over: forget it; an idle connection starts its
        keep-alive clock, or closes if a GOAWAY went out."""
        if self.streams.pop(channel.stream_id, None) is None or self.streams or self._closed:
            return
        if self._last_stream_id is not None:
            self._close()
        else:
            self.io.set_timer(_KEEP_ALIVE, self._keep_alive_seconds)

    def _goaway(self) -> None:
        """A graceful GOAWAY naming the last stream we will serve, written beside h2 (which
        would refuse every later send, so in-flight streams could not finish)."""
        self.output.flush()
        last = self._last_stream_id = self.h2.highest_inbound_stream_id
        self.io.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())

    def _terminated(self, event: ConnectionTerminated) -> None:
        """The client sent GOAWAY. NO_ERROR with requests in flight: they still get their
        responses (h2 closed its state machine; it is put back), then the connection closes."""
        if event.error_code != ErrorCodes.NO_ERROR or not self.streams:
            if event.error_code != ErrorCodes.NO_ERROR:
                logger.debug("HTTP/2 GOAWAY from %s: %s", self.io.client, event.error_code)
            self._close()
            self.connection_lost()  # every stream learns it
            return
        h2_reopen_after_goaway(self.h2)
        if self._last_stream_id is None:
            self._last_stream_id = self.h2.highest_inbound_stream_id

    def _calm(self, what: str) -> None:
        """The client went past a flood limit (:mod:`~towpath.interface.protocol.h2_limits`):
        ``GOAWAY(ENHANCE_YOUR_CALM)``, every stream ends, nothing more is read, and a moment
        later (time for the GOAWAY to reach the client) the connection closes."""
        logger.warning(
            "HTTP/2 client %s: %s; closing its connection with GOAWAY(ENHANCE_YOUR_CALM)",
            self.io.client,
            what,
        )
        with contextlib.suppress(H2Error):
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, additional_data=what.encode())
        self.output.flush()
        self.connection_lost()  # every stream learns it
        io = self.io
        io.pause_reading()
        io.set_timer(_KEEP_ALIVE, None)
        io.set_timer(_LINGER, _LINGER_SECONDS)

    def _fail(self) -> None:
        """A connection error: send h2's GOAWAY (or ours, when what h2 queued has none: it
        raised before queuing one, as for a bad preface), close, drop every stream. A client
        that does not take the GOAWAY is cut after the keep-alive time."""
        data = self.h2.data_to_send()
        if not _has_goaway(data):
            with contextlib.suppress(H2Error):
                self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
        if data:
            self.io.write(data)
        self._close(force=True)
        self.connection_lost()  # every stream learns it

    def _close(self, force: bool = False) -> None:
        """Close once what was written went out. A client that does not take it within the
        keep-alive time is cut: after an error (``force``), or when the output is backed up
        already (it stopped reading)."""
        self.output.flush()
        self._closed = True
        io = self.io
        io.set_timer(_KEEP_ALIVE, None)
        if force or self.output.paused:
            io.set_timer(_ABORT, self._keep_alive_seconds)
        io.close()


def _has_goaway(data: bytes) -> bool:
    """Whether whole frames (RFC 9113 4.1: 9-byte headers, length then type) hold a GOAWAY."""
    offset = 0
    while offset + 9 <= len(data):
        if data[offset + 3] == GoAwayFrame.type:
            return True
        offset += 9 + int.from_bytes(data[offset : offset + 3], "big")
    return False


def _over(content_length: bytes, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:
        return False
