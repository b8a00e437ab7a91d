"""ASGI lifespan, once for the two hosts of an app: the interface server in direct mode
(``towpath.interface.server``) and a worker hosting an ASGI app (``towpath.worker.loop``).

The app's startup runs before the host serves (the server listens, the worker receives) and its
shutdown after the last connection is done. The ``state`` dict the app fills during startup is
shared into every scope (a shallow copy per scope, as ASGI asks).

``mode``: ``"on"`` requires the app to support lifespan (an exception, or returning before
``lifespan.startup.complete``, is a startup failure); ``"auto"`` takes an app that raises on the
``lifespan`` scope, or returns without answering, as one that does not support it (many simple
apps do; logged, the host goes on without); ``"off"`` skips it. ``lifespan.startup.failed`` is a
failure in every mode: :meth:`Lifespan.startup` raises :class:`LifespanFailure` with the app's
message, and the host never serves (the CLI exits 3).

Where the two hosts differ, the caller says so:

* ``subject`` words the failures: the server's say ``application startup failed: ...`` (as
  uvicorn's do), a worker's ``the app's lifespan startup failed: ...``;
* the server takes ``mode`` from ``ServerConfig.lifespan``; a worker always runs ``"auto"``;
* ``wait_for_exit``: a worker waits, after the shutdown answer, for the app's lifespan
  coroutine to return (its process exits next); the server does not (a coroutine that lingers
  after ``lifespan.shutdown.complete`` must not hold up its exit);
* a failed shutdown is logged; only in ``"on"`` mode does :meth:`Lifespan.shutdown` raise it
  too (the server has stopped by then; a worker, always ``"auto"``, only logs).

This module imports nothing of towpath's: both halves of a decoupled stack use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

__all__ = ["Lifespan", "LifespanFailure", "LifespanMode"]

LifespanMode = Literal["auto", "on", "off"]

_Message = dict[str, Any]
_App = Callable[
    [dict[str, Any], Callable[[], Awaitable[_Message]], Callable[[_Message], Awaitable[None]]],
    Awaitable[None],
]


class LifespanFailure(RuntimeError):
    """The app's lifespan startup (or, with ``mode="on"``, shutdown) failed; the host does not
    serve. ``towpath.interface.lifespan.LifespanFailure`` and ``towpath.worker.LifespanFailure``
    are this class."""


class Lifespan:
    """Runs one app's lifespan: ``await startup()``, serve, ``await shutdown()``."""

    def __init__(
        self,
        app: Any,
        mode: LifespanMode = "auto",
        *,
        subject: str = "application",
        logger: logging.Logger | None = None,
        wait_for_exit: bool = False,
    ) -> None:
        self.app: _App = app
        self.mode = mode
        self.subject = subject
        self.wait_for_exit = wait_for_exit
        self._logger = logger or logging.getLogger("towpath")
        #: the scope's ``state``; None when the app does not do lifespan (or it is off)
        self.state: dict[str, Any] | None = None
        #: False once the app turned out not to support lifespan (or its startup failed)
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[_Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
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
            self.supported = False
            raise LifespanFailure(f"{self.subject} startup failed: {self._failure}")
        if not self.supported:
            self.state = None

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app (logs a failure; raises only in
        ``"on"`` mode, after the host already stopped)."""
        task = self._task
        if self.mode == "off" or task is None or not self.supported or task.done():
            return
        self._phase = "shutdown"
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self.wait_for_exit:
            await asyncio.gather(task, return_exceptions=True)
        if self._failure is not None:
            self._logger.error("%s shutdown failed: %s", self.subject, self._failure)
            if self.mode == "on":
                raise LifespanFailure(f"{self.subject} shutdown failed: {self._failure}")

    async def _receive(self) -> _Message:
        return await self._inbox.get()

    async def _send(self, message: _Message) -> None:
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
                    self._logger.info("ASGI 'lifespan' protocol appears unsupported (%r)", exc)
                    self.supported = False
                else:
                    self._logger.error("Exception in 'lifespan' startup", exc_info=exc)
                    self._failure = f"{type(exc).__name__}: {exc}"
            else:
                self._logger.error("Exception in ASGI 'lifespan'", exc_info=exc)
                if self._phase == "shutdown" and self._failure is None:
                    self._failure = f"{type(exc).__name__}: {exc}"
        else:
            if not self._startup_done.is_set():
                # returned without answering startup: treat as "does not do lifespan"
                if self.mode == "on":
                    self._failure = "the application returned before lifespan.startup.complete"
                else:
                    self._logger.info("The app returned from lifespan without answering startup")
                    self.supported = False
        finally:
            self._startup_done.set()
            self._shutdown_done.set()
