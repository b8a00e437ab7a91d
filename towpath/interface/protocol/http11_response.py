"""HTTP/1.1 response heads, formatted once, with h11 told only the framing.

An app's headers are checked and formatted here; only the framing headers (content-length,
transfer-encoding, connection) go through h11, which keeps its state machine (keep-alive, body
framing) exactly as if it had sent the whole head. When the whole body is known, h11 is told a
stand-in head with an empty body of known length and the caller writes the body itself (the
fast path: one h11 event, not three). The server's own answers (400, 408, 413, 500, ...) are
made here too.
"""

from __future__ import annotations

from collections.abc import Iterable

import h11

from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import ASGIProtocolError
from towpath.interface.protocol.headers import PHRASES, bad_header, date_value, status_line

__all__ = ["ResponseHeads"]

#: response headers h11 is told about (its framing and keep-alive come from these)
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_STAND_INS: dict[tuple[int, bool], h11.Response] = {}


def _stand_in(status: int, close: bool) -> h11.Response:
    """The head h11 is given when the whole body is known: its status, an empty body and the
    connection's fate (h11 events are immutable, so one of each is made once)."""
    event = _STAND_INS.get((status, close))
    if event is None:
        headers = [(b"content-length", b"0")]
        if close:
            headers.append((b"connection", b"close"))
        event = _STAND_INS[status, close] = h11.Response(status_code=status, headers=headers)
    return event


class ResponseHeads:
    """The response heads of one HTTP/1.1 connection (its h11 state machine, the configured
    ``server`` and ``date`` headers)."""

    __slots__ = ("_date", "_h11", "_server_header", "_server_line")

    def __init__(self, conn: h11.Connection, config: ServerConfig) -> None:
        self._h11 = conn
        self._server_header = (
            config.server_header.encode("latin-1") if config.server_header is not None else None
        )
        self._server_line = (
            b"server: %s\r\n" % self._server_header if self._server_header is not None else None
        )
        self._date = config.date_header

    def head(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        length: int | None,
        close: bool,
        head_request: bool,
        no_body: bool,
        trailers: bool,
    ) -> tuple[bytes, bool, bool]:
        """The head of a ``status`` response with the app's ``headers``; h11 is told its
        framing. ``length``: the whole body is known (its size); ``close``: the connection
        closes after this response (the app may ask for it too); ``head_request``,
        ``no_body`` (HEAD, 204, 304: no body is written); ``trailers``: the request allows
        them and the app announced some.

        Returns ``(head, whole, trailers)``: ``whole`` means h11 was told an empty body and
        the caller writes the body itself; ``trailers`` whether they can be sent (a chunked
        body to an HTTP/1.1 client). Raises :class:`ASGIProtocolError` for bad headers, and
        h11's ``LocalProtocolError`` for framing it refuses."""
        conn = self._h11
        lines = [status_line(status)]
        server = self._server_line
        date = self._date
        framing: list[tuple[bytes, bytes]] = []
        app_length: bytes | None = None
        chunked = False
        try:
            for name, value in headers:
                if type(name) is not bytes or type(value) is not bytes:
                    raise ASGIProtocolError(f"response header {name!r} must be bytes: {value!r}")
                lower = name.lower()
                if lower in _FRAMING:
                    if lower == b"content-length":
                        app_length = value
                    elif lower == b"transfer-encoding":
                        chunked = True
                    elif b"close" in value.lower():
                        close = True
                        continue
                    else:
                        continue  # connection: keep-alive / upgrade mean nothing here
                    framing.append((lower, value))
                    continue
                if lower == b"server":
                    server = None
                elif lower == b"date":
                    date = False
                if bad_header(name, value):
                    raise ASGIProtocolError(f"invalid response header {name!r}: {value!r}")
                lines.append(b"%s: %s\r\n" % (name, value))
        except (TypeError, ValueError) as exc:
            raise ASGIProtocolError(
                f"response headers must be (bytes, bytes) pairs: {exc}"
            ) from None
        if server is not None:
            lines.append(server)
        if date:
            lines.append(b"date: %s\r\n" % date_value())
        # trailers need a chunked body: no content-length, an HTTP/1.1 client, a body at all
        trailers = (
            trailers and app_length is None and not no_body and conn.their_http_version == b"1.1"
        )
        if close:
            framing.append((b"connection", b"close"))
        if length is not None and not chunked and not trailers:
            if app_length is None:
                if head_request or not no_body:
                    lines.append(b"content-length: %d\r\n" % length)
            elif not app_length.strip().isdigit():  # written as it is: h11 does not see it
                raise ASGIProtocolError(f"invalid content-length {app_length!r}")
            elif not no_body and app_length.strip() != b"%d" % length:
                raise ASGIProtocolError(
                    f"content-length {app_length!r} does not match the body ({length} bytes)"
                )
            else:
                lines.append(b"content-length: %s\r\n" % app_length)
            if close:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            conn.send(_stand_in(status, close))
            return b"".join(lines), True, trailers
        own = conn.send(h11.Response(status_code=status, headers=framing))
        lines.append(own[own.index(b"\r\n") + 2 :])  # h11's framing lines and the blank line
        return b"".join(lines), False, trailers

    def error(self, status: int) -> bytes:
        """A whole ``status`` answer of the server's own (its phrase as a text body), closing
        the connection."""
        phrase = PHRASES.get(status, b"Error")
        head = [
            b"HTTP/1.1 %d %s" % (status, phrase),
            b"content-type: text/plain; charset=utf-8",
            b"content-length: %d" % len(phrase),
            b"connection: close",
        ]
        if self._server_header is not None:
            head.append(b"server: " + self._server_header)
        if self._date:
            head.append(b"date: " + date_value())
        return b"\r\n".join(head) + b"\r\n\r\n" + phrase
