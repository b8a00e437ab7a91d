"""``towpath runserver``: an interface server and a worker in one process and event loop.

The two halves of a decoupled stack never import each other (they meet through the channel
layer and :mod:`towpath.wire`); this module, above both, is where they are joined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from towpath.interface.forwarding import ForwardingApp
from towpath.interface.server import Server
from towpath.layers.base import BaseChannelLayer
from towpath.signals import handle_signals
from towpath.worker.loop import Worker

__all__ = ["run_server"]

logger = logging.getLogger("towpath.worker")


async def run_server(
    layer: BaseChannelLayer,
    worker: Worker,
    config: Any,
    *,
    ready: Callable[[list[Any]], Any] | None = None,
    **forwarding: Any,
) -> None:
    """``towpath runserver``: an interface server forwarding to ``layer`` and ``worker`` on
    it, in this event loop. On a signal the server drains first (the worker still answers its
    requests), then the worker stops."""
    server = Server(ForwardingApp(layer, **forwarding), config.replace(lifespan="off"))
    loop = asyncio.get_running_loop()
    running = loop.create_task(worker.run())
    started = asyncio.ensure_future(worker.started())
    stop = asyncio.Event()

    def on_signal() -> None:
        if not started.done():  # the worker waits for its layer: nothing is in flight
            logger.info("shutting down")
            worker.stop(force=True)
        elif stop.is_set():
            logger.warning("second signal: shutting down now")
            server.force()
            worker.stop(force=True)
        else:
            logger.info("shutting down (signal again to force)")
            stop.set()

    try:
        with handle_signals(on_signal):
            await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                started.cancel()
                running.result()  # raises why the worker could not start
                return  # stopped before its layer answered
            try:
                await server.start()
            except BaseException:
                worker.stop(force=True)
                raise
            if ready is not None:
                ready(list(server.addresses))
            stop_wait = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stop_wait, running}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            await server.shutdown()
            worker.stop()
            await running
    finally:
        if not running.done():
            worker.stop(force=True)
            await asyncio.gather(running, return_exceptions=True)
        await layer.close()
