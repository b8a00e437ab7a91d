"""HTTP/1.1 on h11: keep-alive, pipelining, chunked bodies, 100-continue, trailers, hand-offs.

h11 parses requests and keeps the state machine; this module turns its events into one
:class:`HTTP11Stream` per request and the app's messages back into bytes. A response head is held
until the first body message so that head and body leave in one ``io.write``. Requests pipelined
behind the current one stay in h11's buffer (it answers ``PAUSED``) until the response is done;
past ``max_pipelined_requests`` of them reading pauses. A request body is handed to the app as it
arrives and reading pauses while the app has more than ``_BODY_HIGH_BYTES`` unread.

A response head waits for the first body message for at most one loop turn (timer ``"flush"``,
armed for 0 seconds): an app that streams later (SSE, long-poll) still shows its head at once.
``"keep-alive"`` closes a connection idle for ``keep_alive_timeout_seconds``; it is armed once
and re-armed for the time left when it fires on a connection that was busy meanwhile, so a busy
connection costs no timer per request. ``"header"`` (a request head begun and not finished: a
slowloris client gets 408) and ``"body"`` (a request body stalled) are armed only while the
connection waits on the client. Bad input gets 400/413/414/431/505 and a close: h11 refuses
most of it, and :mod:`towpath.interface.protocol.http11_head` checks each complete head before
h11 parses it (size, field count, the framing shapes of request smuggling, the version) and
follows a chunked body's chunk sizes. The stream of one request is
:class:`~towpath.interface.protocol.http11_stream.HTTP11Stream`.

Response heads are formatted by :mod:`towpath.interface.protocol.http11_response`. Hand-offs
(the HTTP/2 prior-knowledge preface, ``Upgrade: h2c``, ``Upgrade: websocket``) are decided here
when the request head arrives and made by :mod:`towpath.interface.protocol.http11_upgrade` once
the request ended (an upgrade request's body is dropped, under the body timer).
"""

from __future__ import annotations

import logging
import time

import h11

from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    Connection,
    ConnectionIO,
    ServerContext,
)
from towpath.interface.protocol.http11_head import ChunkScanner, check_head
from towpath.interface.protocol.http11_response import ResponseHeads
from towpath.interface.protocol.http11_stream import HTTP11Stream
from towpath.interface.protocol.http11_upgrade import (
    PREFACE_REQUEST,
    Upgrade,
    h2_connection_class,
    hand_off,
    requested_upgrade,
    to_http2,
    websocket_connection_class,
)
from towpath.interface.protocol.scope import http_scope

__all__ = ["HTTP11Connection", "HTTP11Stream"]

logger = logging.getLogger("towpath.interface")
#: seconds a connection accepted just before a graceful shutdown may take to send its first
#: request (which is then served, with ``connection: close``)
FIRST_REQUEST_GRACE = 1.0

#: request body bytes the app has not received yet before reading pauses
_BODY_HIGH_BYTES = 64 * 1024
#: a response body up to this size is copied behind its head for one write; larger ones are not
_COPY_LIMIT_BYTES = 64 * 1024

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
#: request headers this module looks at (everything else goes to the app untouched)
_NOTABLE = frozenset((b"upgrade", b"te", b"content-length", b"transfer-encoding", b"connection"))
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
#: the client's states once its request was read (the second: an upgrade we may refuse; a
#: documented state that h11 exports but leaves out of its ``__all__``, hence mypy's complaint)
_REQUEST_READ = (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]

_monotonic = time.monotonic


def _version(event: h11.Request) -> str:
    """ASGI's ``http_version``: a later HTTP/1 minor version is served as 1.1 (RFC 9112 2.3);
    other major versions were refused (505) before h11 parsed the head."""
    return _VERSIONS.get(event.http_version) or "1.1"


class HTTP11Connection(Connection):
    """An HTTP/1.1 connection: h11's state machine plus the stream of the request in flight."""

    def __init__(self, io: ConnectionIO, context: ServerContext) -> None:
        super().__init__(io, context)
        config = context.config
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        self.stream: HTTP11Stream | None = None
        self._heads = ResponseHeads(self.h11, config)
        self._request_keep_alive = True
        #: the one of "header" / "body" that is armed
        self._timer: str | None = None
        self._keep_alive_armed = False
        self._idle_since: float | None = None  # monotonic time the connection became idle
        self._first = True  # no request seen yet (the HTTP/2 preface may come)
        self._closed = False  # closed, aborted, lost or handed off: nothing more to do
        self._shutting_down = False
        self._paused_body = False
        self._paused_pipeline = False
        self._reading_paused = False
        #: a hand-off waiting for the end of its request
        self._upgrade: Upgrade | None = None
        #: the request head being received (its first ``max_header_bytes`` + 1 bytes), checked
        #: (http11_head) before h11 parses it; None from its end to the next cycle
        self._request_head: bytearray | None = bytearray()
        #: bytes of ``_request_head`` already searched for the end of the head
        self._request_head_searched = 0
        #: the request just checked is chunked
        self._chunked = False
        #: follows the chunked body being read (chunk sizes h11 would take but must not)
        self._chunks: ChunkScanner | None = None

    # -- transport events ----------------------------------------------------------------------

    def connection_made(self) -> None:
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._idle_since = None
        chunks = self._chunks
        if chunks is not None:
            status = chunks.feed(data)
            if chunks.done:
                self._chunks = None
            if status is not None:
                logger.debug("bad chunk size in a request body; %d", status)
                self._fail(status)
                return
        head = self._request_head
        if head is not None and len(head) <= self._request_head_cap:
            head += data[: self._request_head_cap + 1 - len(head)]
        self.h11.receive_data(data)
        self._process()

    def connection_lost(self) -> None:
        if self._closed and self.stream is None:
            return
        self._closed = True
        self._stop_timers()
        stream = self.stream
        if stream is not None:
            self._abandon(stream)

    def timeout(self, name: str) -> None:
        if name == "flush":
            self._flush_head()
            return
        if name == "keep-alive":
            self._keep_alive_armed = False
            idle_since = self._idle_since
            if idle_since is not None and not self._closed:
                left = idle_since + self.context.config.keep_alive_timeout_seconds - _monotonic()
                if left > 0:
                    self._keep_alive_armed = True
                    self.io.set_timer("keep-alive", left)
                else:
                    self._close()
            return
        if self._closed or name != self._timer:
            return
        self._timer = None
        stream = self.stream
        if name == "first":
            self._close()  # no first request came while the server drained
            return
        if name == "header":
            logger.debug("request head not complete in time; 408")
            if stream is None or not stream.head_sent:
                self._fail(408)
            else:
                self._close(abort=True)
        elif name == "body":
            logger.debug("request body stalled; closing")
            if stream is not None and stream.head_sent:
                self._close(abort=True)
            else:
                self._fail(408)

    def shutdown(self, websocket_close_code: int = 1001) -> None:
        self._shutting_down = True
        if self._closed or self.stream is not None:
            return
        if self._first and self.h11.their_state is h11.IDLE:
            # Accepted just before the signal: its first request may be on its way (a restart
            # behind a shared socket). It is served, then the connection closes; a head begun
            # already has its header timer, and an empty connection gets FIRST_REQUEST_GRACE.
            if not self.h11.trailing_data[0]:
                self._set_timer("first")
            return
        self._close()

    # -- reading -------------------------------------------------------------------------------

    def _process(self) -> None:
        """Turn what h11 has buffered into stream events until it needs data or pauses."""
        conn = self.h11
        while not self._closed:
            if self._request_head is not None and not self._check_head():
                return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                logger.debug("bad HTTP/1.1 request: %s", exc)
                status = exc.error_status_hint
                if status == 431 and b"\n" not in conn.trailing_data[0]:
                    status = 414  # the request line alone is over max_header_bytes
                self._fail(status)
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_data(event)  # type: ignore[arg-type]
            elif kind is h11.Request:
                self._on_request(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._on_end()
            elif event is h11.NEED_DATA:
                self._after_read()
                return
            elif event is h11.PAUSED:
                self._on_paused()
                return
            else:  # ConnectionClosed
                self._close()
                return

    @property
    def _request_head_cap(self) -> int:
        return self.context.config.max_header_bytes

    def _check_head(self) -> bool:
        """Check the head being received before h11 parses it, once its end is there
        (:func:`~towpath.interface.protocol.http11_head.check_head`; the search goes on where
        the last one stopped, so a head in many pieces costs no more); False: refused."""
        head = self._request_head
        assert head is not None
        check = check_head(head, self.context.config, self._request_head_searched)
        if check.status is not None:
            logger.debug("bad HTTP/1.1 request head (%s); %d", check.reason, check.status)
            self._fail(check.status)
            return False
        if check.length is None:
            self._request_head_searched = len(head)  # not complete yet
        else:
            self._request_head = None
            self._chunked = check.chunked
        return True

    def _scan_chunks(self) -> bool:
        """A chunked request: follow its chunk sizes from the body bytes already read on;
        False: refused."""
        self._chunked = False
        scanner = ChunkScanner(self.context.config.max_body_bytes)
        status = scanner.feed(self.h11.trailing_data[0])
        if status is not None:
            logger.debug("bad chunk size in a request body; %d", status)
            self._fail(status)
            return False
        self._chunks = None if scanner.done else scanner
        return True

    def _on_request(self, event: h11.Request) -> None:
        self._set_timer(None)
        if self._chunked and not self._scan_chunks():
            return
        # raw_items() is one list; iterating h11's Headers costs a Python call per header
        headers = [(name.lower(), value) for name, value in event.headers.raw_items()]
        method = _METHODS.get(event.method) or event.method.decode("ascii")
        first, self._first = self._first, False
        if method == "PRI" and event.target == b"*" and event.http_version == b"2.0":
            self._prior_knowledge(first)
            return
        if (self._shutting_down or self.context.shutting_down) and not first:
            self._fail(503)  # a next request on a kept-alive connection: go elsewhere
            return
        trailers_allowed = False
        upgrade: bytes | None = None
        has_body = False
        keep_alive = event.http_version != b"1.0"
        connection_upgrade = False
        for name, value in headers:
            if name in _NOTABLE:
                if name == b"connection":
                    lowered = value.lower()
                    keep_alive = keep_alive and b"close" not in lowered
                    connection_upgrade = connection_upgrade or b"upgrade" in lowered
                elif name == b"te":
                    trailers_allowed = trailers_allowed or b"trailers" in value.lower()
                elif name == b"upgrade":
                    upgrade = value.lower()
                elif name == b"content-length":
                    has_body = value != b"0"
                    limit = self.context.config.max_body_bytes
                    if limit is not None and int(value) > limit:
                        logger.debug("request body of %s bytes is over the limit; 413", value)
                        self._fail(413)
                        return
                elif name == b"transfer-encoding":
                    has_body = True
        self._request_keep_alive = keep_alive
        if upgrade is not None and connection_upgrade:
            self._upgrade = requested_upgrade(
                self.context,
                upgrade=upgrade,
                method=method,
                target=event.target,
                headers=headers,
                http_version=_version(event),
                has_body=has_body,
            )
            if self._upgrade is not None:
                return
        scope = http_scope(
            self.context,
            self.io,
            method=method,
            target=event.target,
            headers=headers,
            http_version=_version(event),
        )
        stream = self.stream = HTTP11Stream(self, scope, method == "HEAD", trailers_allowed)
        self.io.start_stream(stream)

    def _on_data(self, event: h11.Data) -> None:
        stream = self.stream
        if stream is None:  # the body of a request being handed off: dropped
            return
        if not stream._data(bytes(event.data)):
            logger.debug("request body over max_body_bytes; 413")
            if stream.head_sent:
                self._close(abort=True)
            else:
                stream.status = 413
                self._fail(413)
            return
        if stream._body_pending > _BODY_HIGH_BYTES and not self._paused_body:
            self._paused_body = True
            self._set_timer(None)
            self._update_reading()
        self.io.wake(stream)

    def _on_end(self) -> None:
        upgrade = self._upgrade
        if upgrade is not None:
            self._upgrade = None
            self._hand_off(upgrade)
            return
        if self._timer is not None:
            self._set_timer(None)
        stream = self.stream
        if stream is not None:
            stream._body_done = True
            self.io.wake(stream)

    def _after_read(self) -> None:
        """h11 needs more bytes: arm the timer for what we are waiting on."""
        conn = self.h11
        state = conn.their_state
        if state is h11.IDLE:
            if self._timer == "header":
                pass  # a head begun earlier: its timer runs (the buffer is not looked at again)
            elif self._request_head:  # part of a head
                self._set_timer("header")
            elif self.stream is None:
                self._idle()
        elif (
            state is h11.SEND_BODY
            and not self._paused_body
            # a request being served, or an upgrade (its body is dropped, the hand-off waits)
            and (self.stream is not None or self._upgrade is not None)
            and not conn.client_is_waiting_for_100_continue
        ):
            self._arm_body_timer()

    def _on_paused(self) -> None:
        """h11 holds pipelined requests until this response is done: bound how many."""
        conn = self.h11
        if conn.their_state in _REQUEST_READ and self.stream is not None:
            buffered = conn.trailing_data[0]
            if (
                buffered.count(b"\r\n\r\n") >= self.context.config.max_pipelined_requests
                or len(buffered) > self.context.config.max_header_bytes * 4
            ) and not self._paused_pipeline:
                self._paused_pipeline = True
                self._update_reading()

    def wants_body(self, stream: HTTP11Stream) -> None:
        """The app waits for body bytes: a client expecting ``100 Continue`` gets it now."""
        conn = self.h11
        if self._closed:
            return
        if conn.they_are_waiting_for_100_continue and conn.our_state is h11.SEND_RESPONSE:
            self.io.write(conn.send(_CONTINUE))
            if not self._paused_body:
                self._arm_body_timer()

    def body_consumed(self, size: int) -> None:
        if self._paused_body:
            self._paused_body = False
            self._update_reading()
            if self.h11.their_state is h11.SEND_BODY:
                self._arm_body_timer()

    def _update_reading(self) -> None:
        paused = self._paused_body or self._paused_pipeline
        if paused != self._reading_paused and not self._closed:
            self._reading_paused = paused
            if paused:
                self.io.pause_reading()
            else:
                self.io.resume_reading()

    # -- writing -------------------------------------------------------------------------------

    def _head(self, stream: HTTP11Stream, length: int | None) -> tuple[bytes, bool]:
        """The response head (:meth:`ResponseHeads.head`; ``length``: the whole body is known)
        and whether h11 was told the whole response. The connection closes after it unless
        both sides keep it alive and the request was read."""
        close = (
            not self._request_keep_alive
            or self._shutting_down
            or self.context.shutting_down
            or self.h11.their_state not in _REQUEST_READ  # the body was not read: close after
        )
        head, whole, stream._trailers_allowed = self._heads.head(
            stream.status or 500,
            stream._headers,
            length,
            close,
            stream._head,
            stream._no_body,
            stream._trailers_allowed and stream._trailers_wanted,
        )
        return head, whole

    def send_body(self, stream: HTTP11Stream, body: bytes, more: bool) -> None:
        conn = self.h11
        if self._closed:
            raise ClientDisconnected("the connection is closed")
        if type(body) is not bytes:
            if not isinstance(body, bytearray | memoryview):
                raise ASGIProtocolError(f"http.response.body body must be bytes, not {body!r:.40}")
            body = bytes(body)
        parts: list[bytes] = []  # joined into one write, unless the body is too big to copy
        write_body = bool(body) and not stream._no_body
        try:
            if not stream.head_sent:
                self.io.set_timer("flush", None)
                try:
                    head, whole = self._head(stream, None if more else len(body))
                except h11.LocalProtocolError as exc:  # the app's headers: a 500 follows
                    raise ASGIProtocolError(f"bad response head: {exc}") from None
                stream.head_sent = True
                parts.append(head)
                if whole:  # h11 was told an empty body: the body goes out as it is
                    if write_body:
                        parts.append(body)
                    write_body = False
            if write_body:  # h11 frames it (chunk size line, body, CRLF) without copying it
                parts += conn.send_with_data_passthrough(h11.Data(data=body)) or ()
            if not more:
                if stream._trailers_wanted:
                    stream.awaiting_trailers = True
                else:
                    parts.append(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:  # e.g. more body than its content-length
            self._close(abort=True)
            raise ASGIProtocolError(str(exc)) from None
        stream.response_bytes += len(body)
        if len(body) <= _COPY_LIMIT_BYTES:
            self.io.write(b"".join(parts))
        else:
            for part in parts:
                if part:
                    self.io.write(part)
        if not more and not stream._trailers_wanted:
            self._response_done(stream)

    def _flush_head(self) -> None:
        """The app started a response and yielded without a body (SSE, long-poll): the head
        goes out now, so the client sees it; the body follows chunked."""
        stream = self.stream
        if stream is None or self._closed or stream.head_sent or not stream.started:
            return
        try:
            data = self._head(stream, None)[0]
        except (h11.LocalProtocolError, ASGIProtocolError) as exc:
            logger.debug("bad response head: %s", exc)
            self._fail(500)
            return
        stream.head_sent = True
        self.io.write(data)

    def send_trailers(self, stream: HTTP11Stream, trailers: list[tuple[bytes, bytes]]) -> None:
        try:
            data = self.h11.send(h11.EndOfMessage(headers=trailers))
        except h11.LocalProtocolError as exc:
            self._close(abort=True)
            raise ASGIProtocolError(str(exc)) from None
        self.io.write(data)
        self._response_done(stream)

    def _response_done(self, stream: HTTP11Stream) -> None:
        """The response is complete: log it, then close or start the next cycle."""
        stream.complete = True
        access_log = self.context.access_log
        if access_log is not None:
            access_log("http.complete", stream)
        if stream is not self.stream:
            return
        self.stream = None
        conn = self.h11
        if (
            conn.our_state is not h11.DONE
            or conn.their_state is not h11.DONE
            or self._shutting_down
            or self.context.shutting_down
        ):
            self._close()
            return
        conn.start_next_cycle()
        self._request_head = bytearray(conn.trailing_data[0][: self._request_head_cap + 1])
        self._request_head_searched = 0
        if self._paused_pipeline:
            self._paused_pipeline = False
            self._update_reading()
        self.io.wake(stream)  # a receive() waiting for the disconnect returns
        self._process()

    def app_failed(self, stream: HTTP11Stream) -> None:
        """The app raised or returned early: 500 if nothing was sent, else cut the connection."""
        if stream.head_sent or self._closed or stream is not self.stream:
            self._close(abort=True)
            return
        stream.status = 500
        self._fail(500)

    # -- ending --------------------------------------------------------------------------------

    def _fail(self, status: int) -> None:
        """Answer ``status`` (unless a response already began) and close."""
        stream = self.stream
        if stream is not None and stream.head_sent:
            self._close(abort=True)
            return
        if not self._closed:
            self.io.write(self._heads.error(status))
        if stream is not None:
            stream.status = status
            stream.head_sent = True
            self._finish_stream(stream)
        self._close()

    def _finish_stream(self, stream: HTTP11Stream) -> None:
        """The server ended this exchange for the app: log it, and the app sees a disconnect."""
        if not stream.complete:
            stream.complete = True
            access_log = self.context.access_log
            if access_log is not None:
                access_log("http.complete", stream)
        stream.disconnected = True
        self.io.wake(stream)

    def _abandon(self, stream: HTTP11Stream) -> None:
        self.stream = None
        self._finish_stream(stream)

    def _close(self, abort: bool = False) -> None:
        """Close (``abort``: reset, dropping what is unwritten); the app in flight is told."""
        if not self._closed:
            self._closed = True
            self._stop_timers()
            if abort:
                self.io.abort()
            else:
                self.io.close()
        stream = self.stream
        if stream is not None:
            self._abandon(stream)

    def _idle(self) -> None:
        """Nothing in flight: the keep-alive clock starts. Its timer is armed once and, when it
        fires early (the connection was busy meanwhile), re-armed for what is left, so a busy
        connection costs no timer per request."""
        if self._idle_since is None:
            self._idle_since = _monotonic()
        if not self._keep_alive_armed:
            self._keep_alive_armed = True
            self.io.set_timer("keep-alive", self.context.config.keep_alive_timeout_seconds)

    def _stop_timers(self) -> None:
        self._set_timer(None)
        if self._keep_alive_armed:
            self._keep_alive_armed = False
            self.io.set_timer("keep-alive", None)

    def _arm_body_timer(self) -> None:
        """(Re)arm the body timer: it measures the longest pause, so progress restarts it."""
        if self._timer == "body":
            self.io.set_timer("body", self.context.config.body_timeout_seconds)
        else:
            self._set_timer("body")

    def _set_timer(self, name: str | None) -> None:
        if name == self._timer:
            return
        config = self.context.config
        io = self.io
        if self._timer is not None:
            io.set_timer(self._timer, None)
        self._timer = name
        if name == "header":
            io.set_timer(name, config.header_timeout_seconds)
        elif name == "first":
            io.set_timer(name, min(FIRST_REQUEST_GRACE, config.header_timeout_seconds))
        elif name == "body":
            io.set_timer(name, config.body_timeout_seconds)

    # -- hand-offs -----------------------------------------------------------------------------

    def _prior_knowledge(self, first: bool) -> None:
        """The HTTP/2 preface (h11 read its first line as a request ``PRI * HTTP/2.0``)."""
        if not first or not self.context.config.http2 or h2_connection_class() is None:
            logger.debug("HTTP/2 preface refused (HTTP/2 off, or not the first request)")
            self._fail(505 if first else 400)
            return
        to_http2(self.io, self.context, PREFACE_REQUEST + self._leave())

    def _hand_off(self, upgrade: Upgrade) -> None:
        if upgrade.kind == "websocket" and websocket_connection_class() is None:
            logger.debug("WebSocket upgrade but no WebSocket support; 400")
            self._fail(400)
            return
        hand_off(self.io, self.context, upgrade, self._leave())

    def _leave(self) -> bytes:
        """The transport goes to another protocol: this connection is done, its timers are
        cancelled. Returns the bytes h11 read past the request."""
        self._closed = True
        self._stop_timers()
        return self.h11.trailing_data[0]
