"""Running a worker as a process: signals, and ``runserver``'s interface server + worker in one
event loop. SIGTERM/SIGINT stop gracefully; a second signal cuts what is still running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from towpath.config import import_from_string
from towpath.layers.base import BaseChannelLayer, stats_report
from towpath.worker.channels import WorkerConfigError
from towpath.worker.loop import Worker

__all__ = ["make_worker", "run_server", "run_worker"]

logger = logging.getLogger("towpath.worker")


def make_worker(
    layer: BaseChannelLayer,
    alias: str,
    routing: str | None,
    asgi_path: str | None,
    only_channels: tuple[str, ...] = (),
    exclude_channels: tuple[str, ...] = (),
    concurrency: int = 100,
    graceful_timeout: float = 30.0,
    heartbeat_interval: float = 1.0,
    handback_timeout: float = 10.0,
) -> Worker:
    """The worker ``towpath runworker``/``runserver`` options describe: ``routing`` or the
    ASGI app ``asgi_path`` (``module:attr``, imported with the working directory on the path).
    Raises ``WorkerConfigError``/``ImportError``/``TypeError`` naming what is wrong."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = None
    if asgi_path is not None:
        app = import_from_string(asgi_path)
        if not callable(app):
            raise WorkerConfigError(f"--asgi {asgi_path!r} is not an ASGI app: {app!r:.60}")
    return Worker(
        layer,
        routing if app is None else None,
        app=app,
        only_channels=only_channels,
        exclude_channels=exclude_channels,
        concurrency=concurrency,
        graceful_timeout=graceful_timeout,
        layer_alias=alias,
        heartbeat_interval=heartbeat_interval,
        handback_timeout=handback_timeout,
    )


@contextlib.contextmanager
def _signals(handler: Callable[[], None], worker: Worker | None = None) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    handlers = {signal.SIGTERM: handler, signal.SIGINT: handler}
    if worker is not None:
        handlers[signal.SIGUSR1] = lambda: log_stats(worker)
    for signum, each in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, each)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def run_worker(worker: Worker) -> None:
    """Run ``worker`` until SIGTERM/SIGINT; close its layer after (which puts back what the
    layer fetched and no consumer took)."""

    def on_signal() -> None:
        if worker.stopping:
            logger.warning("second signal: cancelling what is still running")
            worker.stop(force=True)
        else:
            logger.info("stopping: finishing in-flight work (signal again to force)")
            worker.stop()

    try:
        with _signals(on_signal, worker):
            await worker.run()
    finally:
        log_stats(worker)
        await worker.layer.close()


def log_stats(worker: Worker) -> None:
    """The worker's and its layer's counters as one JSON line (``stats {...}``), on SIGUSR1
    and when it stops."""
    logger.info("stats %s", stats_report(worker=worker.stats, layer=worker.layer.stats))


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
    from towpath.interface.forwarding import ForwardingApp
    from towpath.interface.server import Server

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
        with _signals(on_signal):
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
