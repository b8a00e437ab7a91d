"""Routing: which consumer runs for a message.

``route(channel, target, **filters)`` and ``include(routes, **filters)`` build a plain list;
``Router(routes)`` compiles it for a worker (``router.match(channel, message)``,
``router.channels``) and is itself an ASGI 3 app for in-process serving
(``towpath serve myapp:router``). Unrouted HTTP gets 404 (``not_found``), an unrouted
WebSocket is rejected (``reject_websocket``).
"""

from towpath.routing.fallbacks import not_found, reject_websocket
from towpath.routing.router import Match, Router, call_message_consumer
from towpath.routing.routes import (
    CONNECTION_CHANNELS,
    Include,
    Route,
    asgi_app,
    include,
    message_consumer,
    route,
)

__all__ = [
    "CONNECTION_CHANNELS",
    "Include",
    "Match",
    "Route",
    "Router",
    "asgi_app",
    "call_message_consumer",
    "include",
    "message_consumer",
    "not_found",
    "reject_websocket",
    "route",
]
