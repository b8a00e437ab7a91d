"""``group_send`` treats a full member as back-pressure, not loss (issue 18).

A ``group_send`` first delivers at once to every member with room: each layer's one-step path
(one script per Redis shard, one critical section for IPC), which also names the members it
found full, and only when there are some. The full ones are then tried again, each on its own,
with the jittered back-off of ``backoff.py``, until

* the member takes the message, or
* it is no longer a member of the group (``group_discard``, expiry): every retry checks the
  membership before it pushes, and a ``group_discard`` through this layer instance wakes the
  waiting at once, or
* ``group_send_timeout`` has passed since the ``group_send`` began.

Only then is a member skipped: counted in ``stats.group_full`` and logged as channels_redis
logs it. ``group_send`` returns once every member took the message or was given up, so one
publisher's messages reach every member in the order it sent them (concurrent publishers may
interleave differently at a member that was full). ``stats.group_send_delayed`` counts the
members waited for.

A member given up is remembered, per group, as **stalled**: later ``group_send`` calls to that
group skip it at once (counted) while it is still full, so a member nobody reads any more (a
dead consumer) costs its publisher one timeout, not one per message. The first ``group_send``
that finds room in it (or finds it gone from the group) forgets it, and from then on it is
waited for again; so does ``group_expiry`` after it was given up, and its ``group_discard``.
At most ``STALLED_LIMIT`` members are remembered (the oldest are forgotten first).

``group_send_timeout=0`` skips a full member at once, as channels_redis does.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from towpath.layers.backoff import Backoff, send_when_room
from towpath.layers.base import InvalidChannelLayerError, LayerStats, log_group_full

__all__ = ["DEFAULT_GROUP_SEND_TIMEOUT", "STALLED_LIMIT", "GroupWaits", "MemberLeft", "Retry"]

#: seconds a group_send waits for a full member by default
DEFAULT_GROUP_SEND_TIMEOUT = 5.0
#: stalled members remembered per layer instance, at most
STALLED_LIMIT = 10_000

#: ``retry(channel, message)``: deliver the message being group-sent to one member, if it is
#: still a member and has room. Raises ``ChannelFull`` (still full) or :class:`MemberLeft`.
Retry = Callable[[str, dict[str, Any]], Awaitable[None]]


class MemberLeft(Exception):
    """A retry found the channel no longer a member of the group (or its process gone): it is
    not waited for any more, and not counted as full."""


class _Outcome(enum.Enum):
    TOOK = "took"  # the member took the message
    LEFT = "left"  # no longer a member: not counted
    GAVE_UP = "gave up"  # still full at the deadline: skipped, counted, remembered as stalled


def group_send_timeout(value: object) -> float:
    """``value`` as a number of seconds ≥ 0, else ``InvalidChannelLayerError`` naming the
    option and the fix."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= 0
        or value == float("inf")
    ):
        raise InvalidChannelLayerError(
            f"group_send_timeout must be a finite number of seconds ≥ 0, not {value!r}: how "
            "long a group_send waits for a full member (default "
            f"{DEFAULT_GROUP_SEND_TIMEOUT:g}); 0 skips a full member at once, as channels_redis "
            "does"
        )
    return float(value)


class GroupWaits:
    """One layer instance's waiting for full group members, and the members it gave up on.

    A layer calls :meth:`settle` after its one-step delivery whenever that found members full
    or the group has stalled members (``group in waits.stalled``), and :meth:`left` from
    ``group_discard``. ``clock`` (monotonic seconds) and ``rand`` are injectable."""

    __slots__ = ("_count", "_waiting", "clock", "limit", "memory", "rand", "stalled", "timeout")

    def __init__(
        self,
        timeout: object,
        *,
        memory: float,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        limit: int = STALLED_LIMIT,
    ) -> None:
        self.timeout = group_send_timeout(timeout)
        #: seconds a stalled member is remembered (the layer's ``group_expiry``)
        self.memory = memory
        self.clock = clock
        self.rand = rand
        self.limit = limit
        #: group -> {member given up on: when (``clock``)}, oldest first
        self.stalled: dict[str, dict[str, float]] = {}
        self._count = 0
        # (group, channel) -> the futures of the waits for it, which group_discard resolves
        self._waiting: dict[tuple[str, str], set[asyncio.Future[None]]] = {}

    async def settle(
        self,
        group: str,
        message: dict[str, Any],
        full: Sequence[str],
        members: int,
        began: float,
        retry: Retry,
        stats: LayerStats,
        logger: logging.Logger,
    ) -> None:
        """Wait for the ``full`` members of ``group`` (the rest of its ``members`` took the
        message) until each took it, left, or ``timeout`` passed since ``began``; count and
        log what was skipped."""
        skipped = 0
        waiting: Sequence[str] = full
        stalled = self.stalled.get(group)
        if stalled is not None:
            still = set(full)
            now = self.clock()
            for channel, since in list(stalled.items()):
                if channel not in still or now - since >= self.memory:
                    self._forget(group, channel)  # it took this message, or was long ago
            stalled = self.stalled.get(group, {})
            waiting = [channel for channel in full if channel not in stalled]
            skipped = len(full) - len(waiting)
        if waiting and self.timeout > 0:
            stats.group_send_delayed += len(waiting)
            deadline = began + self.timeout
            outcomes = await _all(
                [self._wait(group, channel, message, deadline, retry) for channel in waiting]
            )
            now = self.clock()
            for channel, outcome in zip(waiting, outcomes, strict=True):
                if outcome is _Outcome.GAVE_UP:
                    self._remember(group, channel, now)
                    skipped += 1
        else:
            skipped += len(waiting)
        if skipped:
            stats.group_full += skipped
            log_group_full(logger, group, skipped, members)

    async def _wait(
        self, group: str, channel: str, message: dict[str, Any], deadline: float, retry: Retry
    ) -> _Outcome:
        """Try ``channel`` again after each back-off pause, each pause cut short by the
        deadline or by its ``group_discard`` here."""
        key = (group, channel)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, set()).add(woken)
        clock = self.clock

        def keep_trying() -> bool:
            return not woken.done() and clock() < deadline

        async def pause(delay: float) -> None:
            left = deadline - clock()
            if left > 0 and not woken.done():
                await asyncio.wait((woken,), timeout=min(delay, left))

        backoff = Backoff(rand=self.rand)
        try:
            await pause(backoff.pause())  # it was full a moment ago: no retry at once
            if keep_trying() and await send_when_room(
                retry, channel, message, keep_trying, backoff=backoff, sleep=pause
            ):
                return _Outcome.TOOK
        except MemberLeft:
            return _Outcome.LEFT
        finally:
            waits = self._waiting.get(key)
            if waits is not None:
                waits.discard(woken)
                if not waits:
                    del self._waiting[key]
            if not woken.done():
                woken.cancel()
        return _Outcome.LEFT if woken.done() and not woken.cancelled() else _Outcome.GAVE_UP

    def left(self, group: str, channel: str) -> None:
        """``channel`` left ``group`` (a ``group_discard`` through this layer instance): stop
        waiting for it now, and forget it as stalled."""
        self._forget(group, channel)
        for woken in self._waiting.get((group, channel), ()):
            _wake(woken)

    def clear(self) -> None:
        """Forget every stalled member and end every wait (``flush()``)."""
        self.stalled.clear()
        self._count = 0
        for waits in self._waiting.values():
            for woken in waits:
                _wake(woken)

    def _remember(self, group: str, channel: str, now: float) -> None:
        stalled = self.stalled.setdefault(group, {})
        if channel not in stalled:
            if self._count >= self.limit:
                oldest = next(iter(self.stalled))
                self._forget(oldest, next(iter(self.stalled[oldest])))
                stalled = self.stalled.setdefault(group, {})
            self._count += 1
        stalled[channel] = now

    def _forget(self, group: str, channel: str) -> None:
        stalled = self.stalled.get(group)
        if stalled is not None and stalled.pop(channel, None) is not None:
            self._count -= 1
            if not stalled:
                del self.stalled[group]

    def __repr__(self) -> str:
        return (
            f"<GroupWaits timeout={self.timeout:g}s stalled={self._count} "
            f"waiting={sum(len(w) for w in self._waiting.values())}>"
        )


async def _all(waits: list[Awaitable[_Outcome]]) -> list[_Outcome]:
    """Await every wait at once; the first error cancels the rest and propagates."""
    if len(waits) == 1:
        return [await waits[0]]
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _wake(woken: asyncio.Future[None]) -> None:
    """Resolve ``woken`` from any thread (a wait may run in another event loop)."""
    loop = woken.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _resolve(woken)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
