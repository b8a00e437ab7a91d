"""The chat's routes: the page at ``/`` and ``/room/<room>/``, the socket at
``/ws/chat/<room>/``. Room names are ``[A-Za-z0-9_-]``, 1 to 64 characters, so that every
room maps to a valid group name."""

from examples.chat.consumers import ChatConsumer, page
from towpath.routing import route

ROOM = r"(?P<room>[A-Za-z0-9_-]{1,64})"

routes = [
    route("http.request", page, path=r"^/$", method=r"^(GET|HEAD)$"),
    route("http.request", page, path=rf"^/room/{ROOM}/$", method=r"^(GET|HEAD)$"),
    route("websocket.connect", ChatConsumer, path=rf"^/ws/chat/{ROOM}/$"),
]
