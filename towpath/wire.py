"""The decoupled wire protocol in code: the names and shapes ``docs/protocol.md`` describes.

Interface servers and workers meet only through a channel layer and this module: the channel
names they send on, the ``towpath.*`` events they add to ASGI's, the message shapes (as
``TypedDict``s, for readers and type checkers; the layers carry plain dicts), and how an ASGI
scope becomes a message's ``scope`` and back. Section numbers below are the document's.

This module imports nothing of towpath's: the interface server (``towpath.interface``), the
worker (``towpath.worker``), the consumers and the routing all import it, never each other.
"""

# No ``from __future__ import annotations``: the TypedDicts' ``NotRequired`` must be seen at
# run time too (``__required_keys__``), which string annotations hide on Python 3.11.
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, Literal, NotRequired, TypedDict

__all__ = [
    "ABORT_EVENT",
    "CUT_EVENT",
    "HANDBACK_END_EVENT",
    "HANDBACK_EVENT",
    "HANDBACK_EXTENSION",
    "HEARTBEAT_ACK_EVENT",
    "HEARTBEAT_EVENT",
    "HTTP_REQUEST_CHANNEL",
    "RELAYED_EXTENSIONS",
    "RELEASED_EVENT",
    "REQUEST_BODY_PREFIX",
    "TEXT_PLAIN",
    "WEBSOCKET_CONNECT_CHANNEL",
    "WEBSOCKET_DISCONNECT_CHANNEL",
    "WEBSOCKET_RECEIVE_CHANNEL",
    "AbortMessage",
    "HTTPRequestMessage",
    "HandbackEndMessage",
    "HandbackMessage",
    "HeartbeatAckMessage",
    "HeartbeatMessage",
    "ReleasedMessage",
    "WebSocketConnectMessage",
    "WebSocketDisconnectMessage",
    "WebSocketReceiveMessage",
    "scope_to_wire",
    "wire_extensions",
    "wire_to_scope",
]

# -- Channels (section 2) -------------------------------------------------------------------

#: the start of every HTTP request (3.1)
HTTP_REQUEST_CHANNEL: Final = "http.request"
#: per-request channels carrying the rest of a body and ``http.disconnect``: prefix + 24 hex
#: (3.3, 3.4)
REQUEST_BODY_PREFIX: Final = "http.request.body."
#: a WebSocket handshake, first or resumed (4.1, 10)
WEBSOCKET_CONNECT_CHANNEL: Final = "websocket.connect"
#: a client's WebSocket message, when the connection has no ``owner`` (4.3, 4.5)
WEBSOCKET_RECEIVE_CHANNEL: Final = "websocket.receive"
#: the end of a WebSocket, when it has no ``owner`` (4.4, 4.5)
WEBSOCKET_DISCONNECT_CHANNEL: Final = "websocket.disconnect"

# -- towpath's events (not ASGI's) ----------------------------------------------------------

#: worker -> reply channel: abandon this HTTP response (its app raised after the start); the
#: client's connection (HTTP/1.1) or stream (HTTP/2) is reset rather than left waiting (3.5)
ABORT_EVENT: Final = "towpath.abort"
#: worker -> control channel: "I am alive, and working on these connections" (10)
HEARTBEAT_EVENT: Final = "towpath.heartbeat"
#: server -> the worker's process channel: "I am alive" (and which listed connections it no
#: longer holds), in answer to each heartbeat (10)
HEARTBEAT_ACK_EVENT: Final = "towpath.heartbeat.ack"
#: worker -> reply channel: "I am stopping, resume this connection elsewhere" (10)
HANDBACK_EVENT: Final = "towpath.handback"
#: server -> the old owner's process channel: the ``order`` of the last client frame sent to
#: it (10)
HANDBACK_END_EVENT: Final = "towpath.handback.end"
#: old owner -> reply channel: its instance of a handed-back connection has ended (10)
RELEASED_EVENT: Final = "towpath.released"
#: consumer -> a two-member group: where a handed-back connection's group traffic passes from
#: the old consumer to the new one (10, "The cut")
CUT_EVENT: Final = "towpath.cut"
#: the scope extension a worker's host gives each WebSocket app instance for the cut: a dict
#: the app writes ``"channel"`` in and reads ``"resumed_from"``, ``"lost_from"``,
#: ``"timeout"`` and ``"abandoned"`` from (10, "The cut")
HANDBACK_EXTENSION: Final = "towpath.handback"

#: the headers of the plain-text answers either side makes itself (a 503, a 500); shared: do
#: not change it
TEXT_PLAIN: Final[list[tuple[bytes, bytes]]] = [(b"content-type", b"text/plain; charset=utf-8")]

# -- Messages -------------------------------------------------------------------------------
# What each message carries, keys as documented; a receiver ignores keys it does not know (1).


class HTTPRequestMessage(TypedDict):
    """``http.request`` channel: the start of a request (3.1)."""

    type: Literal["http.request"]
    reply_channel: str
    request_channel: str
    control_channel: str
    scope: dict[str, Any]
    body: bytes
    more_body: bool
    sent_at: float
    deadline: NotRequired[float]
    heartbeat_timeout: float


class WebSocketConnectMessage(TypedDict):
    """``websocket.connect`` channel: a handshake, first (``order`` 0) or resumed (4.1, 10)."""

    type: Literal["websocket.connect"]
    reply_channel: str
    control_channel: str
    scope: dict[str, Any]
    order: int
    sent_at: float
    deadline: NotRequired[float]
    heartbeat_timeout: float
    resumed_from: NotRequired[str]
    lost_from: NotRequired[str]


class WebSocketReceiveMessage(TypedDict):
    """``websocket.receive`` (or the owner's channel): one client message, text or bytes
    (4.3)."""

    type: Literal["websocket.receive"]
    reply_channel: str
    order: int
    text: NotRequired[str]
    bytes: NotRequired[bytes]


class WebSocketDisconnectMessage(TypedDict):
    """``websocket.disconnect`` (or the owner's channel): the end, sent once (4.4)."""

    type: Literal["websocket.disconnect"]
    reply_channel: str
    code: int
    order: int
    reason: NotRequired[str]


class AbortMessage(TypedDict):
    """reply channel: abandon the HTTP response (3.5)."""

    type: Literal["towpath.abort"]


class HeartbeatMessage(TypedDict):
    """control channel: a worker's heartbeat (10)."""

    type: Literal["towpath.heartbeat"]
    worker: str
    connections: list[str]
    orders: NotRequired[dict[str, int]]
    draining: NotRequired[list[str]]


class HeartbeatAckMessage(TypedDict):
    """the worker's process channel: the server's answer to a heartbeat (10)."""

    type: Literal["towpath.heartbeat.ack"]
    control_channel: str
    time: float
    unknown: NotRequired[list[str]]


class HandbackMessage(TypedDict):
    """reply channel: a stopping owner hands its WebSocket back (10)."""

    type: Literal["towpath.handback"]
    worker: str
    channel: NotRequired[str]


class HandbackEndMessage(TypedDict):
    """the old owner's process channel: the last client frame it was sent (10)."""

    type: Literal["towpath.handback.end"]
    reply_channel: str
    order: int


class ReleasedMessage(TypedDict):
    """reply channel: the old owner's instance of a handed-back WebSocket ended (10)."""

    type: Literal["towpath.released"]
    worker: str
    order: int


# -- The scope, both ways (3.2) -------------------------------------------------------------

#: extensions a worker can use through the reply channel; the rest stay in the server process
RELAYED_EXTENSIONS: Final = ("http.response.trailers", "websocket.http.response")
#: scope keys that never cross the layer (the server's own objects, its process's state)
_LOCAL_SCOPE_KEYS: Final = ("extensions", "state")


def wire_extensions(extensions: Any) -> dict[str, Any]:
    """The ``extensions`` a scope carries on the wire: those of :data:`RELAYED_EXTENSIONS` the
    server offers, each as an empty map (``{}`` when none)."""
    if not extensions:
        return {}
    return {name: {} for name in RELAYED_EXTENSIONS if name in extensions}


def scope_to_wire(
    scope: Mapping[str, Any], extensions: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The interface server's side: an ASGI scope as a message carries it. The same keys minus
    ``state`` (the server process's lifespan state), with ``extensions`` cut to those a worker
    can use (``extensions``: :func:`wire_extensions` of the scope's, when the caller has it
    already) and left out when none apply. Tuples go out as they are: the layer's serialiser
    makes them arrays. Returns a new dict; ``scope`` is not changed."""
    wire = dict(scope)
    for key in _LOCAL_SCOPE_KEYS:
        wire.pop(key, None)
    if extensions is None:
        extensions = wire_extensions(scope.get("extensions"))
    if extensions:
        wire["extensions"] = extensions
    return wire


def wire_to_scope(
    scope: MutableMapping[str, Any], state: dict[str, Any] | None
) -> MutableMapping[str, Any]:
    """The worker's side: a message's scope made ready for an app, in place and returned:
    ``client``/``server`` back to tuples, and a copy of the lifespan ``state`` when the hosted
    app has one."""
    for key in ("client", "server"):
        value = scope.get(key)
        if isinstance(value, list):
            scope[key] = tuple(value)
    if state is not None:
        scope["state"] = dict(state)
    return scope
