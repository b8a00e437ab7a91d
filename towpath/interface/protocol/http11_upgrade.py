"""HTTP/1.1 handing its transport to another protocol.

Three ways out of an HTTP/1.1 connection: ``Upgrade: websocket`` on a GET goes to
:class:`~towpath.interface.protocol.websocket.WebSocketConnection` (which answers the
handshake); ``Upgrade: h2c`` with an ``HTTP2-Settings`` header and no body is answered ``101``
here and goes to :class:`~towpath.interface.protocol.h2.H2Connection`, which serves the request
as stream 1; the HTTP/2 prior-knowledge preface goes to ``H2Connection`` as it is. Each hand-off
is one call that carries the bytes already read past the request; the HTTP/1.1 connection is
done before it (its timers cancelled). Both peer modules are imported only when first needed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from towpath.interface.protocol.base import ConnectionIO, ServerContext

if TYPE_CHECKING:
    from towpath.interface.protocol.h2 import H2Connection
    from towpath.interface.protocol.websocket import WebSocketConnection

__all__ = [
    "PREFACE_REQUEST",
    "Upgrade",
    "h2_connection_class",
    "hand_off",
    "requested_upgrade",
    "to_http2",
    "websocket_connection_class",
]

#: what h11 reads as a request ``PRI * HTTP/2.0`` at the start of the HTTP/2 preface
PREFACE_REQUEST = b"PRI * HTTP/2.0\r\n\r\n"
_SWITCHING_TO_H2C = (
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An upgrade the server takes, waiting for the end of its request."""

    kind: Literal["websocket", "h2c"]
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: str


def h2_connection_class() -> type[H2Connection] | None:
    """``H2Connection``, or None without HTTP/2 support."""
    try:
        from towpath.interface.protocol.h2 import H2Connection
    except ImportError:
        return None
    return H2Connection


def websocket_connection_class() -> type[WebSocketConnection] | None:
    """``WebSocketConnection``, or None without WebSocket support."""
    try:
        from towpath.interface.protocol.websocket import WebSocketConnection
    except ImportError:
        return None
    return WebSocketConnection


def requested_upgrade(
    context: ServerContext,
    *,
    upgrade: bytes,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    http_version: str,
    has_body: bool,
) -> Upgrade | None:
    """The upgrade to take for a request with ``Connection: upgrade`` and ``Upgrade:
    <upgrade>`` (lower-cased), or None to serve it over HTTP/1.1."""
    if b"websocket" in upgrade and method == "GET":
        return Upgrade("websocket", method, target, headers, http_version)
    if (
        b"h2c" in upgrade
        and not has_body
        and context.config.http2
        and _one_valid_h2_settings(headers)
        and h2_connection_class() is not None
    ):
        return Upgrade("h2c", method, target, headers, http_version)
    return None


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _one_valid_h2_settings(headers: list[tuple[bytes, bytes]]) -> bool:
    """Exactly one ``HTTP2-Settings`` header holding base64url SETTINGS (6 bytes per setting):
    else the request is served over HTTP/1.1 (RFC 7540 3.2.1), rather than answered ``101``
    and then refused."""
    values = [value for name, value in headers if name == b"http2-settings"]
    if len(values) != 1:
        return False
    value = values[0].strip()
    try:
        standard = value.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(value) % 4)
        payload = base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(payload) % 6 == 0


def hand_off(io: ConnectionIO, context: ServerContext, upgrade: Upgrade, trailing: bytes) -> None:
    """Give ``io`` to the protocol ``upgrade`` asks for (its module must import: see
    :func:`websocket_connection_class`); ``trailing``: the bytes read after the request."""
    if upgrade.kind == "websocket":
        websocket = websocket_connection_class()
        assert websocket is not None
        websocket.from_http11_upgrade(
            io,
            context,
            target=upgrade.target,
            headers=upgrade.headers,
            http_version=upgrade.http_version,
            trailing=trailing,
        )
        return
    h2 = h2_connection_class()
    assert h2 is not None  # requested_upgrade checked
    settings = next(value for name, value in upgrade.headers if name == b"http2-settings")
    io.write(_SWITCHING_TO_H2C)
    h2.from_h2c_upgrade(
        io,
        context,
        method=upgrade.method,
        target=upgrade.target,
        headers=upgrade.headers,
        settings_header=settings,
        trailing=trailing,
    )


def to_http2(io: ConnectionIO, context: ServerContext, data: bytes) -> None:
    """Give ``io`` to HTTP/2 on its prior-knowledge preface: ``data`` is everything read from
    the preface on (``h2_connection_class()`` must not be None)."""
    h2 = h2_connection_class()
    assert h2 is not None
    connection = h2(io, context)
    io.switch_protocol(connection)
    connection.data_received(data)
