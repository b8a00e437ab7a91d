"""What an unrouted connection gets: HTTP 404, and a WebSocket handshake rejected (HTTP 403).

Both are plain ASGI 3 apps, so a worker runs them like any routed app and the in-process
``Router`` serves them the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["not_found", "reject_websocket"]

_NOT_FOUND = b"Not Found"
_NOT_FOUND_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_NOT_FOUND)).encode()),
]


async def not_found(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer 404 ``Not Found`` (text/plain) without reading the request body."""
    await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND_HEADERS})
    await send({"type": "http.response.body", "body": _NOT_FOUND, "more_body": False})


async def reject_websocket(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Close before accepting: the server answers the handshake with HTTP 403."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1000})
