"""One routing for the whole site: WebSockets to the chat consumer, every HTTP request to the
Flask app through a2wsgi's WSGI-to-ASGI adapter.

The adapter runs each request's WSGI code in a thread pool (``workers`` threads per worker
process), so blocking Flask code never stalls the worker's event loop or the WebSockets it
serves. Routes are tried in order; the HTTP route has no filter, so it takes every request.
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware

from examples.wsgi.consumers import ChatConsumer
from examples.wsgi.flaskapp import app as flask_app
from towpath.routing import asgi_app, route

routes = [
    route("websocket.connect", ChatConsumer, path=r"^/ws/chat/$"),
    route("http.request", asgi_app(WSGIMiddleware(flask_app, workers=20))),
]
