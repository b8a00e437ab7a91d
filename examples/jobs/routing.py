"""The jobs example's routes. The web pool serves the first two (``--exclude-channels
thumbnail``), the job pool the last (``--only-channels thumbnail``); ``towpath runserver``
serves all three in one process."""

from examples.jobs.consumers import JOB_CHANNEL, JobsConsumer, page
from examples.jobs.thumbnail import make_thumbnail
from towpath.routing import route

routes = [
    route("http.request", page, path=r"^/$", method=r"^GET$"),
    route("websocket.connect", JobsConsumer, path=r"^/ws/jobs/$"),
    route(JOB_CHANNEL, make_thumbnail),
]
