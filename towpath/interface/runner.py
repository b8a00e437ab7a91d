"""Running an ASGI 3 application on a :class:`~towpath.interface.protocol.base.Stream`.

The stream is synchronous; this module gives the app its two coroutines. ``receive`` asks the
stream and, while it has nothing, waits for the stream's next ``io.wake``; ``send`` hands the
message over and, while the stream is ``blocked`` (flow control) or the transport's buffer is
over its high-water mark, waits likewise. Each waiter has its own future (an app may receive in
one task while it sends in another, and cancelling one must not fail the other); a wake-up
resolves them all, and each looks again. A stream that is not ``paced`` (a WebSocket whose
unsent output the stream bounds itself, ``ServerContext.ws_output_limit_bytes``) gets
:meth:`StreamRunner.send_unpaced` instead: it hands the message over and never waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.interface.protocol.base import ClientDisconnected, Message, Stream

__all__ = ["ASGIApp", "StreamRunner"]

logger = logging.getLogger("towpath.interface")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]


class StreamRunner:
    """The app's side of one stream: ``receive``, ``send`` and the task running the app."""

    __slots__ = ("_waiters", "_writable", "app", "stream", "task")

    def __init__(
        self,
        app: ASGIApp,
        stream: Stream,
        writable: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self.app = app
        self.stream = stream
        #: an awaitable while the transport's write buffer is over its high-water mark, else
        #: None (checked after every send without making a coroutine); None: never full
        self._writable = writable
        self._waiters: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self.task

    def wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:  # cancelled before a wake-up took it
                self._waiters.remove(waiter)

    async def receive(self) -> Message:
        stream = self.stream
        while True:
            message = stream.receive()
            if message is not None:
                return message
            await self._wait()

    async def send(self, message: Message) -> None:
        stream = self.stream
        stream.send(message)
        while stream.blocked:
            await self._wait()
        if self._writable is not None:
            drained = self._writable()
            if drained is not None:
                await drained

    async def send_unpaced(self, message: Message) -> None:
        """``send`` for a stream that is not ``paced``: the stream takes the message or raises
        (``ClientTooSlow`` past its limit); nothing waits for the client."""
        self.stream.send(message)

    async def run(self) -> None:
        stream = self.stream
        send = self.send if stream.paced else self.send_unpaced
        try:
            await self.app(stream.scope, self.receive, send)
        except asyncio.CancelledError:
            stream.app_finished(asyncio.CancelledError())
            raise
        except ClientDisconnected as exc:
            # the client left mid-response and the app let ``send``'s error propagate: how
            # ASGI says it, not an app failure (nor a traceback per reset stream of an attack)
            logger.debug("ASGI application ended by a disconnect: %s", exc)
            stream.app_finished(exc)
        except Exception as exc:
            logger.error(
                "Exception in ASGI application (%s %s)",
                stream.scope.get("type"),
                stream.scope.get("path"),
                exc_info=exc,
            )
            stream.app_finished(exc)
        else:
            stream.app_finished(None)
