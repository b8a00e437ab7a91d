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

from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    Message,
    Stream,
)

if TYPE_CHECKING:
    from towpath.interface.protocol.h2 import H2Connection

__all__ = ["CONNECTION_HEADERS", "H2Stream"]

#: response headers HTTP/2 forbids (RFC 9113 8.2.2); an app's are dropped, not sent
CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class H2Stream(Stream):
    """One HTTP request/response exchange on an HTTP/2 stream."""

    def __init__(
        self, connection: H2Connection, stream_id: int, scope: dict[str, Any], head: bool
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.scope = scope
        self.head = head  # a HEAD request: the app's body is not sent
        # request side
        self._body: list[bytes] = []
        self._unacked = 0  # flow-controlled bytes received, not yet taken by the app
        self._received = 0
        self._request_done = False  # END_STREAM received
        self._body_given = False  # the app got the last http.request
        # response side
        self._started = False
        self._headers: list[tuple[bytes, bytes]] | None = None  # the head, until it is sent
        self._on_wire = False  # the response head went out
        self._trailers = False  # trailers announced and not yet given in full
        self._trailer_headers: list[tuple[bytes, bytes]] | None = None
        self._body_done = False  # the app sent its last body message
        self._pending: memoryview | None = None  # body waiting for window
        self._complete = False  # END_STREAM sent
        self._gone = False  # reset (either way) or the connection was lost
        self._app_done = False
        self._logged = False

    # -- from the connection --------------------------------------------------------------------

    def data_received(self, data: bytes, flow_length: int) -> None:
        connection = self.connection
        if self._app_done or self._gone or self._body_given:
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

    def reset_received(self) -> None:
        self._lost()

    def connection_lost(self) -> None:
        self._lost()

    def timeout(self, name: str) -> None:
        return

    def shutdown(self, code: int) -> None:
        return

    def _lost(self) -> None:
        """The stream is over without us (reset either way, or the connection went)."""
        if self._gone:
            return
        self._gone = True
        self._pending = None
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

    def _refill(self) -> memoryview | None:
        """Body queued behind the pending one: none (the app's ``send`` waits meanwhile)."""
        return None

    def _ending(self) -> bool:
        return self._body_done and not self._trailers

    def _set_blocked(self, blocked: bool) -> None:
        if self.blocked != blocked:
            self.blocked = blocked
            if not blocked:
                self.connection.io.wake(self)

    def _completed(self) -> None:
        self._complete = True
        self._log()
        self.connection.io.wake(self)  # receive() now answers http.disconnect

    def _too_large(self) -> None:
        """The body went past ``max_body_bytes``: 413 if no response began, then stop the
        client's upload (RST_STREAM NO_ERROR after a complete response, RFC 9113 8.1)."""
        connection = self.connection
        if not self._on_wire:
            self.status = 413
            self._on_wire = self._complete = True
            connection._simple_response(self.stream_id, 413)
        connection._reset(self, ErrorCodes.NO_ERROR if self._complete else ErrorCodes.CANCEL)
        connection.output.flush_soon()

    # -- Stream ---------------------------------------------------------------------------------

    def receive(self) -> Message | None:
        if self._gone:
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
        if self._complete:
            return {"type": "http.disconnect"}
        return None

    def send(self, message: Message) -> None:
        if self._gone:
            raise ClientDisconnected(f"HTTP/2 stream {self.stream_id} was reset or lost")
        kind = message["type"]
        if kind == "http.response.body":
            if not self._started or self._body_done:
                raise ASGIProtocolError(
                    "http.response.body after the last body message"
                    if self._started
                    else "http.response.body before http.response.start"
                )
            self.connection._send_body(
                self, message.get("body", b""), message.get("more_body", False)
            )
        elif kind == "http.response.start":
            if self._started:
                raise ASGIProtocolError("http.response.start sent twice")
            status = message["status"]
            self._headers = self.connection._response_headers(status, message.get("headers", ()))
            self._started = True
            self.status = status
            self._trailers = bool(message.get("trailers", False))
        elif kind == "http.response.trailers":
            if not self._trailers or not self._body_done:
                raise ASGIProtocolError(
                    "http.response.trailers needs 'trailers': True in http.response.start and "
                    "comes after the last body message"
                )
            trailers = self._trailer_headers
            if trailers is None:
                trailers = self._trailer_headers = []
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
        if not self._gone:
            if not self._complete:
                if not self._on_wire:
                    # nothing went out yet: the client gets a plain 500
                    self.status = 500
                    self._on_wire = True
                    connection._simple_response(self.stream_id, 500)
                    self._completed()
                else:
                    connection._reset(self, ErrorCodes.INTERNAL_ERROR)
            if self._complete and not self._request_done:
                # the response is done but the client is still uploading: ask it to stop
                connection._reset(self, ErrorCodes.NO_ERROR)
            connection.output.flush_soon()
        self._log()
        connection._release(self)

    def _log(self) -> None:
        if not self._logged:
            self._logged = True
            log = self.connection.context.access_log
            if log is not None:
                log("http.complete", self)
