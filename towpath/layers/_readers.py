"""What every layer's readers share: an entry they cannot read is dropped, counted and logged
without flooding the log, and a reader that dies anyway is started again.

A reader is whatever moves entries from the store into this process: the Redis layer's inbox
reader and fetchers, the Pub/Sub subscription reader, the IPC layer's wake-up handler, the
RabbitMQ layer's inbox consumer and fetchers. Anyone who can write to the store (a bug in
another program, an attacker with access to Redis, a different ``serializer_format`` or
``symmetric_encryption_keys``) can put bytes there that no towpath process wrote. Such an entry
(its framing is wrong, or the serializer or the decryption refuses it) is

* dropped: the entries around it are delivered as usual, in order;
* counted in the layer's ``stats.undecodable``;
* logged at WARNING, once per reader per burst: the first drop of a reader logs one line (with
  how many its read held and what was wrong with the first); the drops of that reader during
  the next :data:`QUIET_SECONDS` are only counted, and the next line after that says how many
  there were. A flood costs one line per reader per :data:`QUIET_SECONDS`, whatever its size.

A reader task that ends with an unexpected exception (a bug) is logged at ERROR with its
traceback and started again after a pause that doubles with each death in a row (from
:data:`FIRST_RESTART` up to :data:`MAX_RESTART` seconds), so a reader that dies at once cannot
spin a CPU; each restart counts in ``stats.reader_restarts``. Receivers waiting meanwhile keep
waiting and are served by the new reader.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from towpath.layers.base import LayerStats, Message

if TYPE_CHECKING:
    from towpath.layers.serializers import Serializer

__all__ = [
    "EXPIRY_DIGITS",
    "FIRST_RESTART",
    "MAX_RESTART",
    "QUIET_SECONDS",
    "ReaderGuard",
    "inbox_channels",
    "parse_expiry",
]

#: after a reader's WARNING about undecodable entries, its next one waits this long (seconds)
QUIET_SECONDS: Final = 60.0
#: the pause before the first restart of a reader that died (seconds); it doubles per death
FIRST_RESTART: Final = 0.05
#: the longest pause before a restart (seconds)
MAX_RESTART: Final = 30.0
#: a reader that lived this long before it died starts again from FIRST_RESTART
_STABLE_SECONDS: Final = 60.0
#: readers remembered at once (their names come from the store): bounded memory
_MAX_READERS: Final = 1024
#: bytes of a dropped entry quoted in the log line
_SAMPLE: Final = 40
#: how the wire formats begin an entry: its expiry, 13 decimal digits of epoch milliseconds
EXPIRY_DIGITS: Final = 13


def parse_expiry(entry: bytes) -> float | None:
    """The expiry (epoch seconds) at the head of a Redis or RabbitMQ entry, or ``None`` when
    its first 13 bytes are not 13 ASCII digits (``int()`` alone would take ``b" +1_2"``)."""
    head = entry[:EXPIRY_DIGITS]
    if len(head) != EXPIRY_DIGITS or not head.isdigit():
        return None
    return int(head) / 1000


def inbox_channels(names: bytes, inbox: str) -> tuple[list[str], bool]:
    """The ``!`` channels of ``inbox`` (``prefix.<client>!``) that an inbox entry's
    comma-separated ``names`` lists, and whether it lists anything else (bytes that are not
    ASCII, or a name that is not a channel of this inbox): no towpath process wrote that."""
    try:
        listed = names.decode("ascii").split(",")
    except UnicodeDecodeError:
        return [], True
    ours = [name for name in listed if name.startswith(inbox)]
    return ours, len(ours) != len(listed)


class _Burst:
    __slots__ = ("logged_at", "unlogged")

    def __init__(self, logged_at: float) -> None:
        self.logged_at = logged_at
        self.unlogged = 0


class ReaderGuard:
    """One per layer instance: drops (:meth:`dropped`, :meth:`decode`) and restarts
    (:meth:`supervise`, :meth:`crashed`) of its readers, counted in ``stats``."""

    def __init__(
        self,
        stats: LayerStats,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        self.stats = stats
        self.logger = logger
        self.clock = clock
        self.quiet_seconds = quiet_seconds
        self._bursts: dict[str, _Burst] = {}
        # reader -> (deaths in a row, clock at the last one)
        self._deaths: dict[str, tuple[int, float]] = {}

    # -- undecodable entries -------------------------------------------------------------------

    def dropped(
        self, reader: str, reason: str | Exception, sample: bytes | None, count: int = 1
    ) -> None:
        """``count`` entries read by ``reader`` were dropped as undecodable; ``reason`` (what
        was wrong, or the serializer's exception) and ``sample`` (its first bytes are quoted)
        describe the first of them (``None``: nothing worth quoting)."""
        self.stats.undecodable += count
        now = self.clock()
        burst = self._bursts.get(reader)
        if burst is not None and now - burst.logged_at < self.quiet_seconds:
            burst.unlogged += count
            return
        if isinstance(reason, Exception):  # the serializer's or the decryption's
            reason = (
                f"{type(reason).__name__}: {str(reason)[:200]}; do symmetric_encryption_keys "
                "and serializer_format match the sender's?"
            )
        earlier = burst.unlogged if burst is not None else 0
        if burst is None:
            if len(self._bursts) >= _MAX_READERS:
                self._bursts.clear()
            burst = self._bursts[reader] = _Burst(now)
        burst.logged_at, burst.unlogged = now, 0
        self.logger.warning(
            "Dropped %d undecodable entr%s read from %s (%s%s)%s; more from it within "
            "%g s are only counted (stats.undecodable)",
            count,
            "y" if count == 1 else "ies",
            reader,
            reason,
            "" if sample is None else f": {sample[:_SAMPLE]!r}",
            f", and {earlier} since the last such line" if earlier else "",
            self.quiet_seconds,
        )

    def decode(self, serializer: Serializer, reader: str, data: bytes) -> Message | None:
        """``data`` decoded, or ``None`` when the serializer (or the decryption) refuses it:
        then it is dropped as undecodable (a wrong ``symmetric_encryption_keys`` or
        ``serializer_format``, or bytes no towpath process wrote)."""
        try:
            return serializer.deserialize(data)
        except Exception as exc:
            self.dropped(reader, exc, data)
            return None

    # -- readers that die ----------------------------------------------------------------------

    def supervise(self, task: asyncio.Task[Any], reader: str, restart: Callable[[], bool]) -> None:
        """When ``task`` ends with an exception (not cancelled, not returned), log it and call
        ``restart()`` after the back-off pause; ``restart`` returns whether it started a new
        reader (not when the layer is closing or another reader took over)."""
        task.add_done_callback(functools.partial(self._ended, reader, restart))

    def _ended(self, reader: str, restart: Callable[[], bool], task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed(reader, exc, restart, task.get_loop())

    def crashed(
        self,
        reader: str,
        exc: BaseException,
        restart: Callable[[], bool],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``reader`` failed with ``exc``: log it with its traceback, and call ``restart()``
        after the back-off pause."""
        delay = self._pause(reader)
        self.logger.error(
            "The %s died (%s: %s); starting it again in %.2f s",
            reader,
            type(exc).__name__,
            exc,
            delay,
            exc_info=exc,
        )
        loop = loop or asyncio.get_running_loop()
        if not loop.is_closed():
            loop.call_later(delay, self._restart, reader, restart)

    def _restart(self, reader: str, restart: Callable[[], bool]) -> None:
        try:
            started = restart()
        except Exception as exc:
            self.crashed(reader, exc, restart)
            return
        if started:
            self.stats.reader_restarts += 1
            self.logger.info("The %s was started again", reader)

    def _pause(self, reader: str) -> float:
        now = self.clock()
        deaths, last = self._deaths.get(reader, (0, now))
        if now - last >= _STABLE_SECONDS:
            deaths = 0
        if reader not in self._deaths and len(self._deaths) >= _MAX_READERS:
            self._deaths.clear()
        self._deaths[reader] = (deaths + 1, now)
        return float(min(MAX_RESTART, FIRST_RESTART * 2**deaths))
