"""WebSocket clients closed for reading too slowly (decoupled mode): counted, logged once a burst.

The forwarding app must keep reading every reply channel: a reply loop held up by one client
that stopped reading would let that connection's channel fill, and the worker sending to it
(or a ``group_send`` to a group it is in) pay for it. So in decoupled mode the server writes a
WebSocket's output without waiting for the client, and bounds what it holds unsent per
connection instead (``ws_output_limit_bytes``, Centrifugo's client queue): a ``websocket.send``
that would pass the bound closes the client 1013 (``ClientTooSlow`` from the stream) and the
worker gets the connection's ``websocket.disconnect`` 1013. ``docs/protocol.md`` 6.2.

:class:`SlowClients` counts each such close in ``websocket_1013_slow`` and logs at WARNING
without flooding: the first close of a burst logs one line naming the client and the limit;
the closes during the next :data:`QUIET_SECONDS` are only counted, and the next line after that
says how many there were. The clock is injectable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

__all__ = ["QUIET_SECONDS", "SlowClients"]

logger = logging.getLogger("towpath.interface.forwarding")

#: after a WARNING about a slow client, the next one waits this long (seconds)
QUIET_SECONDS: Final = 10.0


class _Counters(Protocol):
    websocket_1013_slow: int


def _peer(client: Any) -> str:
    """An ASGI ``client`` (``[host, port]``, or None for a unix socket) as ``host:port``."""
    if isinstance(client, Sequence) and not isinstance(client, str) and len(client) == 2:
        host, port = client
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "(unix socket)" if client is None else str(client)


class SlowClients:
    """Counts (``stats.websocket_1013_slow``) and logs the clients closed for being slow."""

    __slots__ = ("_clock", "_logged_at", "_unlogged", "quiet_seconds", "stats")

    def __init__(
        self,
        stats: _Counters,
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        self.stats = stats
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._logged_at: float | None = None
        #: closes since the last line, not logged yet
        self._unlogged = 0

    def closed(self, client: Any, limit: int) -> None:
        """The WebSocket of ``client`` (its scope's ``client``) was closed 1013: its unsent
        output would have passed ``limit`` bytes."""
        self.stats.websocket_1013_slow += 1
        now = self._clock()
        logged_at = self._logged_at
        if logged_at is not None and now - logged_at < self.quiet_seconds:
            self._unlogged += 1
            return
        earlier, self._unlogged = self._unlogged, 0
        self._logged_at = now
        logger.warning(
            "Closed the WebSocket of %s 1013 (client too slow): the output it left unread "
            "would have passed %d bytes (ws_output_limit_bytes, --ws-output-limit)%s; more "
            "such closes within %g s are only counted (websocket_1013_slow)",
            _peer(client),
            limit,
            f", and {earlier} more since the last such line" if earlier else "",
            self.quiet_seconds,
        )
