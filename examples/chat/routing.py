"""The chat's routes: the page at ``/`` and ``/room/<room>/``, the socket at
``/ws/chat/<room>/``. Room names are ``[A-Za-z0-9_-]``, 1 to 64 characters, so that every
room maps to a valid group name.

The socket is behind an ``OriginValidator``: a browser page of another site cannot join a room
with the user's cookies (cross-site WebSocket hijacking). ``CHAT_ALLOWED_ORIGINS`` (comma
separated) names the origins the page is served from; by default this machine's, any port.
Clients that are not browsers send no ``Origin`` and are let in (``allow_missing``): the check
protects browsers, and any other client could claim any origin."""

import os

from examples.chat.consumers import ChatConsumer, page
from towpath.consumers import OriginValidator
from towpath.routing import route

ROOM = r"(?P<room>[A-Za-z0-9_-]{1,64})"
ALLOWED_ORIGINS = os.environ.get("CHAT_ALLOWED_ORIGINS", "localhost,127.0.0.1,[::1]").split(",")

routes = [
    route("http.request", page, path=r"^/$", method=r"^(GET|HEAD)$"),
    route("http.request", page, path=rf"^/room/{ROOM}/$", method=r"^(GET|HEAD)$"),
    route(
        "websocket.connect",
        OriginValidator(ChatConsumer, ALLOWED_ORIGINS, allow_missing=True),
        path=rf"^/ws/chat/{ROOM}/$",
    ),
]
