"""One HTTP request/response exchange on an HTTP/2 stream: the ASGI side of it.

:class:`H2Stream` is what the app's ``receive`` and ``send`` talk to. Its
:class:`~towpath.interface.protocol.h2.H2Connection` feeds it the request (``data_received``,
``end_received``, ``reset_received``, ``connection_lost``) and sends what it gives: the response
head through h2, the body through the connection's output
(:class:`~towpath.interface.protocol.h2_output.H2Output`: within the windows and the socket's
back-pressure; the stream is ``blocked`` meanwhile, so the app's ``send`` waits).

Inbound flow control: received DATA is acknowledged only as the app takes it (``receive``), so a
slow app makes the client wait instead of this process buffering; the body of a stream whose app
is done, or that was reset, is given back to the windows at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from h2.exceptions import H2Error, StreamClosedError

from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    Message,
    Stream,
)

if TYPE_CHECKING:
    from towpath.interface.protocol.h2_seam import H2Host

__all__ = ["CONNECTION_HEADERS", "H2Stream"]

#: response headers HTTP/2 forbids (RFC 9113 8.2.2); an app's are dropped, not sent
CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class H2Stream(Stream):
    """One HTTP request/response exchange on an HTTP/2 stream."""

    def __init__(
        self,
        connection: H2Host,
        stream_id: int,
        scope: dict[str, Any],
        head: bool,
        *,
        ended: bool = False,
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.scope = scope
        self.head = head  # a HEAD request: the app's body is not sent
        # request side
        self._body: list[bytes] = []
        self._unacked = 0  # flow-controlled bytes received, not yet taken by the app
        self._received = 0
        self._request_done = ended  # END_STREAM received
        self._body_given = False  # the app got the last http.request
        # response side
        self._started = False
        self._headers: list[tuple[bytes, bytes]] | None = None  # the head, until it is sent
        self._on_wire = False  # the response head went out
        self._trailers = False  # trailers announced and not yet given in full
        self.trailer_headers: list[tuple[bytes, bytes]] | None = None
        self._body_done = False  # the app sent its last body message
        self.pending: memoryview | None = None  # body waiting for window
        self.complete = False  # END_STREAM sent
        self.gone = False  # reset (either way) or the connection was lost
        self._app_done = False
        self._logged = False

    # -- from the connection --------------------------------------------------------------------

    def data_received(self, data: bytes, flow_length: int) -> None:
        connection = self.connection
        if self._app_done or self.gone or self._body_given:
            connection.h2.acknowledge_received_data(flow_length, self.stream_id)
            return
        self._received += len(data)
        limit = connection.context.config.max_body_bytes
        if limit is not None and self._received > limit:
            connection.h2.acknowledge_received_data(flow_length, self.stream_id)
            self._too_large()
            return
        self._body.append(data)
        self._unacked += flow_length
        connection.io.wake(self)

    def end_received(self) -> None:
        self._request_done = True
        self.connection.io.wake(self)

    def server_answered(self, status: int, *, reset: bool) -> None:
        """The server answers this request itself, before any app runs (a body over
        ``max_body_bytes``: 413): ``status`` goes out and the stream is done (reset with
        NO_ERROR after it, ``reset``, when the client is still sending)."""
        self.status = status
        self._app_done = self._on_wire = self.complete = True
        connection = self.connection
        connection.simple_response(self.stream_id, status)
        if reset:
            connection.reset_channel(self, ErrorCodes.NO_ERROR)
        self._log()

    def reset_received(self) -> None:
        self.lost()

    def connection_lost(self) -> None:
        self.lost()

    def timeout(self, name: str) -> None:
        return

    def shutdown(self, code: int) -> None:
        return

    def lost(self) -> None:
        """The stream is over without us (reset either way, or the connection went)."""
        if self.gone:
            return
        self.gone = True
        self.pending = None
        self._give_back()
        self._log()
        self.blocked = False
        self.connection.io.wake(self)

    def _give_back(self) -> None:
        """Drop the received body (the app took it, or never will) and give its bytes back to
        the windows (else a body the app never takes would starve the other streams)."""
        self._body.clear()
        if self._unacked:
            connection = self.connection
            connection.h2.acknowledge_received_data(self._unacked, self.stream_id)
            self._unacked = 0
            connection.output.flush_soon()

    def refill(self) -> memoryview | None:
        """Body queued behind the pending one: none (the app's ``send`` waits meanwhile)."""
        return None

    def ending(self) -> bool:
        return self._body_done and not self._trailers

    def set_blocked(self, blocked: bool) -> None:
        if self.blocked != blocked:
            self.blocked = blocked
            if not blocked:
                self.connection.io.wake(self)

    def completed(self) -> None:
        self.complete = True
        self._log()
        self.connection.io.wake(self)  # receive() now answers http.disconnect

    def _too_large(self) -> None:
        """The body went past ``max_body_bytes``: 413 if no response began, then stop the
        client's upload (RST_STREAM NO_ERROR after a complete response, RFC 9113 8.1)."""
        connection = self.connection
        if not self._on_wire:
            self.status = 413
            self._on_wire = self.complete = True
            connection.simple_response(self.stream_id, 413)
        connection.reset_channel(self, ErrorCodes.NO_ERROR if self.complete else ErrorCodes.CANCEL)
        connection.output.flush_soon()

    # -- Stream ---------------------------------------------------------------------------------

    def receive(self) -> Message | None:
        if self.gone:
            return {"type": "http.disconnect"}
        body = self._body
        if body:
            data = body[0] if len(body) == 1 else b"".join(body)
            self._give_back()
            more = not self._request_done
            self._body_given = not more
            return {"type": "http.request", "body": data, "more_body": more}
        if self._request_done and not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.complete:
            return {"type": "http.disconnect"}
        return None

    def _send_body(self, body: bytes, more: bool) -> None:
        """The head (with the first body) through h2, the body to the connection's output."""
        connection = self.connection
        if not more:
            self._body_done = True
        if self.head:
            body = b""
        head = self._headers
        if head is not None:
            self._headers = None
            end = not more and not body and not self._trailers
            try:
                connection.h2.send_headers(self.stream_id, head, end_stream=end)
            except StreamClosedError as exc:
                self.lost()
                raise ClientDisconnected(f"HTTP/2 stream {self.stream_id} closed") from exc
            except H2Error as exc:
                connection.reset_channel(self, ErrorCodes.INTERNAL_ERROR)
                connection.output.flush_soon()
                raise ASGIProtocolError(f"response headers refused by h2: {exc}") from exc
            self._on_wire = True
            if end:
                connection.output.flush_soon()
                self.completed()
                return
        if body:
            self.response_bytes += len(body)
            pending = self.pending
            self.pending = memoryview(bytes(pending) + body if pending is not None else body)
        output = connection.output
        output.drain(self)
        output.flush_soon()

    def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected(f"HTTP/2 stream {self.stream_id} was reset or lost")
        kind = message["type"]
        if kind == "http.response.body":
            if not self._started or self._body_done:
                raise ASGIProtocolError(
                    "http.response.body after the last body message"
                    if self._started
                    else "http.response.body before http.response.start"
                )
            self._send_body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            if self._started:
                raise ASGIProtocolError("http.response.start sent twice")
            status = message["status"]
            self._headers = self.connection.response_headers(status, message.get("headers", ()))
            self._started = True
            self.status = status
            self._trailers = bool(message.get("trailers", False))
        elif kind == "http.response.trailers":
            if not self._trailers or not self._body_done:
                raise ASGIProtocolError(
                    "http.response.trailers needs 'trailers': True in http.response.start and "
                    "comes after the last body message"
                )
            trailers = self.trailer_headers
            if trailers is None:
                trailers = self.trailer_headers = []
            for name, value in message.get("headers", ()):
                name = bytes(name).lower()
                if name not in CONNECTION_HEADERS and name[:1] != b":":
                    trailers.append((name, bytes(value)))
            if not message.get("more_trailers", False):
                self._trailers = False
                output = self.connection.output
                output.drain(self)
                output.flush_soon()
        else:
            raise ASGIProtocolError(f"unexpected ASGI message {kind!r} on an HTTP stream")

    def app_finished(self, error: BaseException | None) -> None:
        self._app_done = True
        connection = self.connection
        self._give_back()
        if not self.gone:
            if not self.complete:
                if not self._on_wire:
                    # nothing went out yet: the client gets a plain 500
                    self.status = 500
                    self._on_wire = True
                    connection.simple_response(self.stream_id, 500)
                    self.completed()
                else:
                    connection.reset_channel(self, ErrorCodes.INTERNAL_ERROR)
            if self.complete and not self._request_done:
                # the response is done but the client is still uploading: ask it to stop
                connection.reset_channel(self, ErrorCodes.NO_ERROR)
            connection.output.flush_soon()
        self._log()
        connection.release(self)

    def _log(self) -> None:
        if not self._logged:
            self._logged = True
            log = self.connection.context.access_log
            if log is not None:
                log("http.complete", self)
