"""How a towpath process answers signals, once for ``towpath serve``, ``runworker`` and
``runserver``: SIGTERM or SIGINT stops gracefully, the same signal again cuts what is still
running, and SIGUSR1 logs the counters (a ``stats {...}`` line).

:func:`handle_signals` installs the handlers on the running loop for the length of a ``with``
block (nothing where signals cannot be handled: not the main thread, or Windows);
:func:`graceful_then_forced` makes the SIGTERM/SIGINT handler of the two stages. This module
imports nothing of towpath's: both halves of a decoupled stack use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

__all__ = ["graceful_then_forced", "handle_signals"]


@contextlib.contextmanager
def handle_signals(
    on_stop: Callable[[], None], *, on_stats: Callable[[], None] | None = None
) -> Iterator[None]:
    """Call ``on_stop`` on SIGTERM/SIGINT (and ``on_stats`` on SIGUSR1) while in the block;
    where signals cannot be handled (not the main thread), nothing is installed."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop}
    if on_stats is not None:
        handlers[signal.SIGUSR1] = on_stats
    for signum, each in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, each)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def graceful_then_forced(
    graceful: Callable[[], None],
    force: Callable[[], None],
    *,
    logger: logging.Logger,
    stopping: str = "shutting down (signal again to force)",
    forcing: str = "second signal: shutting down now",
    forced: Callable[[], bool] | None = None,
) -> Callable[[], None]:
    """A SIGTERM/SIGINT handler: the first signal logs ``stopping`` (INFO) and calls
    ``graceful``; each one after logs ``forcing`` (WARNING) and calls ``force``. ``forced``,
    when given, says whether the next signal forces (a worker asks whether it is already
    stopping, whoever stopped it); by default, whether a signal came before."""
    signalled = False

    def on_signal() -> None:
        nonlocal signalled
        again = forced() if forced is not None else signalled
        signalled = True
        if again:
            logger.warning(forcing)
            force()
        else:
            logger.info(stopping)
            graceful()

    return on_signal
