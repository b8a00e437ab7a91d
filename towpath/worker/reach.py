"""A worker's start: reach the channel layer before saying it listens.

A worker whose layer is unreachable (Redis down, a wrong port, RabbitMQ not up yet) must not
claim to listen as if all were well, must say what it cannot reach, and must stop at once on a
signal, since nothing is in flight yet. :func:`until_reachable` runs one step of the start (make
the process channel; a round trip to the layer's server) until it succeeds, logging once when
the layer does not answer and once when it is back; a stop ends the wait at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from towpath.layers.base import BaseChannelLayer, LayerConnectionError

__all__ = ["PATIENCE_SECONDS", "PROBE_GROUP", "LayerReach", "probe"]

logger = logging.getLogger("towpath.worker")

T = TypeVar("T")

#: how long a start-up step may take before the worker says the layer does not answer (the
#: layer itself retries for longer: Redis ``retry_timeout``, 10 s)
PATIENCE_SECONDS = 1.0
#: the group a worker's start-up round trip leaves (it was never in it: the call only has to
#: reach the layer's server)
PROBE_GROUP = "towpath.probe"
#: what a layer raises when its server cannot be reached
_UNREACHABLE = (LayerConnectionError, ConnectionError, OSError, TimeoutError)


async def probe(layer: BaseChannelLayer, channel: str) -> None:
    """One round trip to the layer's server, changing nothing: ``group_discard`` of a group
    ``channel`` is not in (a layer without groups is taken as reached)."""
    if "groups" in getattr(layer, "extensions", ()):
        await layer.group_discard(PROBE_GROUP, channel)


class LayerReach:
    """The start-up steps of one worker and what was logged about them."""

    def __init__(
        self,
        layer: BaseChannelLayer,
        stop: asyncio.Event,
        what: str,
        *,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        patience: float = PATIENCE_SECONDS,
    ) -> None:
        self.layer = layer
        self.stop = stop
        #: what the worker will do once the layer answers (for the log line)
        self.what = what
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.patience = patience
        #: the layer was said to be unreachable and has not answered since
        self.down = False

    async def until_reachable(self, step: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``step`` until it succeeds: ``(True, its result)``; ``(False, None)`` if the
        worker was told to stop first. A failure that is not about reaching the layer (a
        misconfiguration) is raised."""
        delay = self.retry_initial
        while True:
            attempt = asyncio.ensure_future(step())
            stopped = asyncio.ensure_future(self.stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {attempt, stopped},
                    timeout=None if self.down else self.patience,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    self._unreachable(f"no answer within {self.patience:g} s")
                    done, _ = await asyncio.wait(
                        {attempt, stopped}, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                stopped.cancel()
            if attempt not in done:
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
                return False, None
            try:
                result = attempt.result()
            except _UNREACHABLE as exc:
                self._unreachable(repr(exc))
            else:
                if self.down:
                    self.down = False
                    logger.warning("the channel layer %r answers again", self.layer)
                return True, result
            try:
                async with asyncio.timeout(delay):
                    await self.stop.wait()
                return False, None
            except TimeoutError:
                delay = min(delay * 2, self.retry_max)

    def _unreachable(self, reason: str) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "the channel layer %r is unreachable (%s); not %s until it answers",
                self.layer,
                reason,
                self.what,
            )
