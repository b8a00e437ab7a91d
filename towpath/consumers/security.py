"""``OriginValidator``: refuse WebSocket handshakes from foreign origins in the app, as
Channels' ``channels.security.websocket.OriginValidator`` does.

A browser page on any site can open a WebSocket to yours, and the browser sends your cookies
with it (cross-site WebSocket hijacking); the ``Origin`` header it adds is what tells the two
apart. ``towpath serve --ws-allowed-origins`` checks it in the interface server, before any
worker sees the connect; this wrapper checks it where the app runs (in a worker, or in-process),
for a project that keeps the rule with its code, or whose routes need different lists::

    from towpath.consumers import OriginValidator
    from towpath.routing import Router, route

    router = Router([
        route("websocket.connect", OriginValidator(ChatConsumer.as_asgi(),
                                                   ["https://chat.example.com", ".example.com"]),
              path=r"^/ws/chat/(?P<room_name>\\w+)/$"),
    ])

Patterns are :mod:`towpath.origins`'s (Channels' forms: ``https://example.com``,
``example.com``, ``.example.com``, ``*``). As in Channels, a handshake without ``Origin`` is
refused unless ``*`` is listed (``allow_missing=True`` lets non-browser clients in). A refused
handshake is closed before accept, which the server answers with HTTP 403; other scopes
(``http``, ``lifespan``) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from towpath.origins import OriginPatterns

__all__ = ["OriginValidator"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class OriginValidator:
    """An ASGI 3 app that passes WebSockets from ``allowed_origins`` to ``application`` and
    closes the others before accept (HTTP 403). ``ValueError`` names a bad pattern."""

    def __init__(
        self,
        application: Any,
        allowed_origins: Iterable[str],
        *,
        allow_missing: bool = False,
    ) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError(
                "allowed_origins must be a list of patterns, not one string: "
                f"OriginValidator(app, [{allowed_origins!r}])"
            )
        if isinstance(application, type) and hasattr(application, "as_asgi"):
            application = application.as_asgi()  # a consumer class
        self.application = application
        self.allowed_origins = OriginPatterns(allowed_origins)
        self.allow_missing = allow_missing

    def __repr__(self) -> str:
        return f"OriginValidator({self.application!r}, {list(self.allowed_origins.patterns)!r})"

    def valid_origin(self, scope: Scope) -> bool:
        """Whether the handshake in ``scope`` comes from an allowed origin (one ``Origin``
        header at most)."""
        origins = [value for name, value in scope.get("headers", ()) if name == b"origin"]
        if len(origins) > 1:
            return False
        origin = bytes(origins[0]).decode("latin-1") if origins else None
        return self.allowed_origins.allows(origin, allow_missing=self.allow_missing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or self.valid_origin(scope):
            await self.application(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1000})
