"""One HTTP/1.1 exchange as an ASGI stream: the request body handed to the app as
``http.request`` messages, the app's ``http.response.*`` messages checked and passed to the
:class:`~towpath.interface.protocol.http11.HTTP11Connection`, which writes them through h11.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from towpath.interface.protocol.base import (
    ASGIProtocolError,
    ClientDisconnected,
    Message,
    Stream,
)

if TYPE_CHECKING:
    from towpath.interface.protocol.base import ConnectionIO, ServerContext

__all__ = ["HTTP11Host", "HTTP11Stream"]

logger = logging.getLogger("towpath.interface")


class HTTP11Host(Protocol):
    """What a stream uses of its connection
    (:class:`~towpath.interface.protocol.http11.HTTP11Connection`)."""

    io: ConnectionIO
    context: ServerContext

    def wants_body(self, stream: HTTP11Stream) -> None:
        """The app waits for body bytes (a client expecting ``100 Continue`` gets it)."""

    def body_consumed(self, size: int) -> None:
        """The app took ``size`` body bytes: a paused client may send more."""

    def send_body(self, stream: HTTP11Stream, body: bytes, more: bool) -> None:
        """Write the head (if not yet) and ``body``; the last one when not ``more``."""

    def send_trailers(self, stream: HTTP11Stream, trailers: list[tuple[bytes, bytes]]) -> None:
        """End the response with ``trailers``."""

    def app_failed(self, stream: HTTP11Stream) -> None:
        """The app raised or returned early (500 if nothing was sent, else the cut)."""


class HTTP11Stream(Stream):
    """One request and its response: the request body as ``http.request`` messages, the app's
    ``http.response.*`` messages written through the connection's h11 state machine."""

    __slots__ = (
        "_body",
        "_body_done",
        "_body_pending",
        "_body_total",
        "_delivered",
        "_head",
        "_headers",
        "_no_body",
        "_trailers",
        "_trailers_allowed",
        "_trailers_wanted",
        "awaiting_trailers",
        "blocked",
        "complete",
        "conn",
        "disconnected",
        "head_sent",
        "response_bytes",
        "scope",
        "started",
        "status",
    )

    def __init__(
        self, conn: HTTP11Host, scope: dict[str, Any], head: bool, trailers_allowed: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.blocked = False
        self.status: int | None = None
        self.response_bytes = 0
        #: request body chunks not yet received by the app, and their size
        self._body: list[bytes] = []
        self._body_pending = 0
        self._body_total = 0
        self._body_done = False
        self._delivered = False  # the final http.request (more_body False) was received
        self.disconnected = False
        self.started = False
        self.head_sent = False
        self.complete = False
        self.awaiting_trailers = False
        self._headers: Any = ()
        self._head = head  # a HEAD request
        self._no_body = head  # HEAD, 204, 304: the body the app sends is not written
        self._trailers_allowed = trailers_allowed  # the request said ``TE: trailers``
        self._trailers_wanted = False
        self._trailers: list[tuple[bytes, bytes]] = []

    # -- the request side ----------------------------------------------------------------------

    def receive(self) -> Message | None:
        body = self._body
        if body:
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            pending, self._body_pending = self._body_pending, 0
            self._delivered = self._body_done
            self.conn.body_consumed(pending)
            return {"type": "http.request", "body": data, "more_body": not self._body_done}
        if self._body_done:
            if not self._delivered:
                self._delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            return None
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        self.conn.wants_body(self)
        return None

    def _data(self, data: bytes) -> bool:
        """A piece of the request body; False when it passes ``max_body_bytes``."""
        self._body.append(data)
        self._body_pending += len(data)
        self._body_total += len(data)
        limit = self.conn.context.config.max_body_bytes
        return limit is None or self._body_total <= limit

    # -- the response side ---------------------------------------------------------------------

    def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client has gone")
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.complete or self.awaiting_trailers:
                raise ASGIProtocolError(self._unexpected(kind))
            self.conn.send_body(self, message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            if self.started:
                raise ASGIProtocolError(self._unexpected(kind))
            status = message["status"]
            if type(status) is not int or not 200 <= status <= 999:
                raise ASGIProtocolError(
                    f"http.response.start status must be an int, not {status!r}"
                )
            self.started = True
            self.status = status
            self._headers = message.get("headers", ())
            self._trailers_wanted = bool(message.get("trailers", False))
            if status == 204 or status == 304:
                self._no_body = True
            self.conn.io.set_timer("flush", 0.0)  # the head goes out alone if no body follows
        elif kind == "http.response.trailers":
            if not self.awaiting_trailers:
                raise ASGIProtocolError(self._unexpected(kind))
            self._trailers.extend(message.get("headers", ()))
            if not message.get("more_trailers", False):
                self.awaiting_trailers = False
                self.conn.send_trailers(self, self._trailers if self._trailers_allowed else [])
        else:
            raise ASGIProtocolError(self._unexpected(kind))

    def _unexpected(self, kind: str) -> str:
        state = "completed" if self.complete else "started" if self.started else "not started"
        return f"unexpected ASGI message {kind!r} (response {state})"

    def app_finished(self, error: BaseException | None) -> None:
        if self.complete or self.disconnected:
            return
        if error is None and self.started:
            logger.error("ASGI app returned without completing the response; closing")
        elif error is None:
            logger.error("ASGI app returned without starting a response; answering 500")
        self.conn.app_failed(self)
