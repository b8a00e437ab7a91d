"""ASGI lifespan in direct mode: the app's startup before the server listens, its shutdown after
the last connection closed.

``config.lifespan``: ``"on"`` requires the app to support it (an exception is a startup
failure), ``"auto"`` tolerates an app that raises on the ``lifespan`` scope (many simple apps
do), ``"off"`` skips it. ``lifespan.startup.failed`` is a failure in every mode: the server
raises :class:`LifespanFailure` with the app's message and never listens (the CLI exits 3).
The ``state`` dict the app fills during startup is shared into every scope (a shallow copy
per scope, as ASGI asks) through :attr:`ServerContext.lifespan_state`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from towpath.interface.protocol.base import Message
from towpath.interface.runner import ASGIApp

__all__ = ["Lifespan", "LifespanFailure"]

logger = logging.getLogger("towpath.interface")


class LifespanFailure(RuntimeError):
    """The app's lifespan startup (or, with ``lifespan="on"``, shutdown) failed."""


class Lifespan:
    """Runs one app's lifespan: ``await startup()``, serve, ``await shutdown()``."""

    def __init__(self, app: ASGIApp, mode: Literal["auto", "on", "off"]) -> None:
        self.app = app
        self.mode = mode
        #: the scope's ``state``; None when the app does not do lifespan (or it is off)
        self.state: dict[str, Any] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._supported = True
        self._failure: str | None = None
        self._phase = "startup"

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; raises :class:`LifespanFailure`."""
        if self.mode == "off":
            return
        state: dict[str, Any] = {}
        self.state = state
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = state
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        self._inbox.put_nowait({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            raise LifespanFailure(f"application startup failed: {self._failure}")
        if not self._supported:
            self.state = None

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app (logs a failure; raises only in
        ``"on"`` mode, after the server already stopped)."""
        if self.mode == "off" or self._task is None or not self._supported:
            return
        if self._task.done():
            return
        self._phase = "shutdown"
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._failure is not None:
            logger.error("application shutdown failed: %s", self._failure)
            if self.mode == "on":
                raise LifespanFailure(f"application shutdown failed: {self._failure}")

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete" and not self._startup_done.is_set():
            self._startup_done.set()
        elif kind == "lifespan.startup.failed" and not self._startup_done.is_set():
            self._failure = str(message.get("message", "")) or "(no message)"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete" and self._phase == "shutdown":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self._phase == "shutdown":
            self._failure = str(message.get("message", "")) or "(no message)"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r} during {self._phase}")

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._startup_done.is_set():
                if self.mode == "auto":
                    logger.info("ASGI 'lifespan' protocol appears unsupported (%r)", exc)
                    self._supported = False
                else:
                    logger.error("Exception in 'lifespan' startup", exc_info=exc)
                    self._failure = f"{type(exc).__name__}: {exc}"
            else:
                logger.error("Exception in ASGI 'lifespan'", exc_info=exc)
                if self._phase == "shutdown" and self._failure is None:
                    self._failure = f"{type(exc).__name__}: {exc}"
        else:
            if not self._startup_done.is_set():
                # returned without answering startup: treat as "does not do lifespan"
                if self.mode == "on":
                    self._failure = "the application returned before lifespan.startup.complete"
                else:
                    self._supported = False
        finally:
            self._startup_done.set()
            self._shutdown_done.set()
