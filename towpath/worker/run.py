"""Running a worker as a process: signals. SIGTERM/SIGINT stop gracefully; a second signal cuts
what is still running. (``runserver``, a worker beside an interface server, is
:mod:`towpath.runserver`.)"""

from __future__ import annotations

import logging

from towpath import signals
from towpath.config import import_from_string, project_on_path
from towpath.layers.base import BaseChannelLayer, stats_report
from towpath.worker.channels import WorkerConfigError
from towpath.worker.config import WorkerConfig
from towpath.worker.loop import Worker

__all__ = ["log_stats", "make_worker", "run_worker"]

logger = logging.getLogger("towpath.worker")


def make_worker(
    layer: BaseChannelLayer,
    config: WorkerConfig,
    routing: str | None = None,
    asgi_path: str | None = None,
) -> Worker:
    """The worker ``towpath runworker``/``runserver`` options describe: ``config`` (built from
    the options), and ``routing`` or the ASGI app ``asgi_path`` (``module:attr``, imported with
    the working directory on the path). Raises ``WorkerConfigError``/``ImportError``/
    ``TypeError`` naming what is wrong."""
    project_on_path()
    app = None
    if asgi_path is not None:
        app = import_from_string(asgi_path)
        if not callable(app):
            raise WorkerConfigError(
                f"--asgi {asgi_path!r} is not an ASGI app: {app!r:.60}", option="--asgi"
            )
    return Worker(layer, routing if app is None else None, app=app, config=config)


async def run_worker(worker: Worker) -> None:
    """Run ``worker`` until SIGTERM/SIGINT; close its layer after (which puts back what the
    layer fetched and no consumer took)."""
    on_signal = signals.graceful_then_forced(
        worker.stop,
        lambda: worker.stop(force=True),
        logger=logger,
        stopping="stopping: finishing in-flight work (signal again to force)",
        forcing="second signal: cancelling what is still running",
        forced=lambda: worker.stopping,
    )
    try:
        with signals.handle_signals(on_signal, on_stats=lambda: log_stats(worker)):
            await worker.run()
    finally:
        log_stats(worker)
        await worker.layer.close()


def log_stats(worker: Worker) -> None:
    """The worker's and its layer's counters as one JSON line (``stats {...}``), on SIGUSR1
    and when it stops."""
    logger.info("stats %s", stats_report(worker=worker.stats, layer=worker.layer.stats))
