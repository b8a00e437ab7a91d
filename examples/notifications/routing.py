"""The notifications' routes. Topics are ``[A-Za-z0-9_-]``, 1 to 64 characters, so each maps
to valid group names (``poll.<topic>``, ``sse.<topic>``)."""

from examples.notifications.consumers import events, page, poll, publish_request
from towpath.routing import route

TOPIC = r"(?P<topic>[A-Za-z0-9_-]{1,64})"

routes = [
    route("http.request", page, path=r"^/$", method=r"^GET$"),
    route("http.request", poll, path=rf"^/poll/{TOPIC}$", method=r"^GET$"),
    route("http.request", events, path=rf"^/events/{TOPIC}$", method=r"^GET$"),
    route("http.request", publish_request, path=rf"^/publish/{TOPIC}$", method=r"^POST$"),
]
