"""What an HTTP/2 stream sees of its connection: one small interface.

:class:`~towpath.interface.protocol.h2.H2Connection` makes the streams (a request's
:class:`~towpath.interface.protocol.h2_stream.H2Stream`, a WebSocket's
:class:`~towpath.interface.protocol.h2_websocket.WebSocketChannel`) and feeds them what it
reads; they answer through :class:`H2Host`, never through the connection's own attributes, so
``h2.py`` composes its parts and none of them imports it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2.connection import H2Connection as H2Protocol
    from h2.errors import ErrorCodes

    from towpath.interface.protocol.base import ConnectionIO, ServerContext
    from towpath.interface.protocol.h2_output import H2Channel, H2Output

__all__ = ["H2Host"]


class H2Host(Protocol):
    """The connection, as its streams use it."""

    #: h2's state machine (acknowledging received data, sending a response head)
    h2: H2Protocol
    io: ConnectionIO
    context: ServerContext
    #: bodies out within the windows and the socket's back-pressure
    output: H2Output

    def simple_response(
        self, stream_id: int, status: int, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer ``stream_id`` with ``status`` and no body (the server's own answers)."""

    def response_headers(
        self, status: int, headers: Iterable[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """An app's response head as HTTP/2 sends it (raises ``ASGIProtocolError`` for a
        header a proxy could split on)."""

    def reset_channel(self, channel: H2Channel, code: ErrorCodes) -> None:
        """RST_STREAM ``channel`` with ``code``; it is lost."""

    def release(self, channel: H2Channel) -> None:
        """The exchange on ``channel`` is over: the connection forgets it."""
