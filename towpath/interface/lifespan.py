"""ASGI lifespan in direct mode: the app's startup before the server listens, its shutdown after
the last connection closed (:mod:`towpath.lifespan`, shared with the worker, with the server's
wording and ``config.lifespan``'s mode).

``config.lifespan``: ``"on"`` requires the app to support it (an exception is a startup
failure), ``"auto"`` tolerates an app that raises on the ``lifespan`` scope (many simple apps
do), ``"off"`` skips it. ``lifespan.startup.failed`` is a failure in every mode: the server
raises :class:`LifespanFailure` with the app's message and never listens (the CLI exits 3).
The ``state`` dict the app fills during startup is shared into every scope (a shallow copy
per scope, as ASGI asks) through :attr:`ServerContext.lifespan_state`.
"""

from __future__ import annotations

import logging

from towpath import lifespan
from towpath.interface.runner import ASGIApp
from towpath.lifespan import LifespanFailure, LifespanMode

__all__ = ["Lifespan", "LifespanFailure"]

logger = logging.getLogger("towpath.interface")


class Lifespan(lifespan.Lifespan):
    """The server's lifespan: failures worded ``application startup failed: ...``; it does not
    wait for the app's lifespan coroutine to return after its shutdown answer."""

    def __init__(self, app: ASGIApp, mode: LifespanMode) -> None:
        super().__init__(app, mode, subject="application", logger=logger)
