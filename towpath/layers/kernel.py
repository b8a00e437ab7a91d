"""What every networked layer (IPC, Redis, Redis pub/sub, RabbitMQ) keeps the same way.

- :class:`LoopStates`: a layer's state per event loop (connections, readers, mailbox). A
  layer is used from any number of event loops (``async_to_sync`` makes one per call), and
  nothing tied to one loop may be used from another, so each loop gets its own state, made
  on first use and closed with its loop (``_loops.close_with_loop``).
- :class:`OutageLog` and :func:`reconnect_backoff`: one server's outages, logged as two
  lines however many connections retried, and the jittered pauses between those retries;
  :class:`OutageRetry`, the two together for a reader that retries after a failure.
- :class:`MailboxReceiving`: ``receive`` and ``receive_many`` of a layer whose readers fill
  a local :class:`~towpath.layers._mailbox.Mailbox` per loop (the messages of its normal
  channels fetched ahead, and of the ``!`` channels of its own inbox): take from it, else
  make sure something will fill it, and wait; cancel-safe, as nothing is taken before the
  ``return``.
- :class:`ExceptionMap`: the boundary where a backend library's exceptions become towpath's
  (``LayerConnectionError``, ``ChannelLayerError``), as httpcore's ``map_exceptions`` does.

Nothing here knows a backend; each layer hands in what differs (how to make a loop's state,
the name of its server kind).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from towpath.layers._loops import Closable, close_with_loop
from towpath.layers._mailbox import Mailbox
from towpath.layers.backoff import Backoff
from towpath.layers.base import (
    BaseChannelLayer,
    ChannelLayerError,
    Message,
    require_valid_channel_name,
)
from towpath.layers.outages import RECONNECT_BACKOFF_MAX, earliest_outage, outages_begun

__all__ = [
    "ExceptionMap",
    "LoopStates",
    "MailboxReceiving",
    "OutageLog",
    "OutageRetry",
    "ServerReachability",
    "reconnect_backoff",
]

S = TypeVar("S")
T = TypeVar("T")

#: the first pause of a reconnecting layer, in seconds (doubling up to RECONNECT_BACKOFF_MAX)
FIRST_RECONNECT_PAUSE = 0.05


class LoopStates(Generic[S]):
    """A layer's per-event-loop state: ``current()`` is the running loop's, made by
    ``make()`` on first use (and ``owner.close()`` hooked to that loop's ``close()``).

    Most programs use one loop: the last loop's state is kept at hand, which saves the
    weak-dictionary lookup on every call.
    """

    __slots__ = ("_by_loop", "_last_loop", "_last_state", "_make", "_owner")

    def __init__(self, owner: Closable, make: Callable[[asyncio.AbstractEventLoop], S]) -> None:
        self._owner = owner
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, S] = (
            weakref.WeakKeyDictionary()
        )
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last_state: S | None = None

    def current(self) -> S:
        """The running loop's state, made now if it has none. Raises RuntimeError outside a
        running loop."""
        loop = asyncio.get_running_loop()
        if loop is self._last_loop and self._last_state is not None:
            return self._last_state
        state = self._by_loop.get(loop)
        if state is None:
            state = self._make(loop)
            self._by_loop[loop] = state
            close_with_loop(loop, self._owner)
        self._last_loop, self._last_state = loop, state
        return state

    def get(self, loop: asyncio.AbstractEventLoop | None = None) -> S | None:
        """The state of ``loop`` (the running one by default), None if it has none."""
        return self._by_loop.get(loop if loop is not None else asyncio.get_running_loop())

    def pop(self, loop: asyncio.AbstractEventLoop | None = None) -> S | None:
        """Forget the state of ``loop`` (the running one by default) and return it."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        if self._last_loop is loop:
            self._last_loop, self._last_state = None, None
        return self._by_loop.pop(loop, None)

    def values(self) -> list[S]:
        """Every live loop's state (a copy: safe to iterate while loops come and go)."""
        return list(self._by_loop.values())

    def __len__(self) -> int:
        return len(self._by_loop)

    def __iter__(self) -> Iterator[asyncio.AbstractEventLoop]:
        """The loops that have a state (a copy)."""
        return iter(list(self._by_loop))

    def __getitem__(self, loop: asyncio.AbstractEventLoop) -> S:
        return self._by_loop[loop]

    def forget_closed(self) -> None:
        """Forget the states of loops closed without closing the layer."""
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            self.pop(loop)

    def clear(self) -> None:
        """Forget every loop's state (after a fork: none of it belongs to this process)."""
        self._by_loop = weakref.WeakKeyDictionary()
        self._last_loop, self._last_state = None, None


def _half_random() -> float:
    return random.random() / 2


def reconnect_backoff() -> Backoff:
    """The pauses of a layer reaching a server that is down: 0.05 s doubling up to
    :data:`~towpath.layers.outages.RECONNECT_BACKOFF_MAX`, each drawn between half the
    nominal pause and the whole of it."""
    return Backoff(FIRST_RECONNECT_PAUSE, RECONNECT_BACKOFF_MAX, rand=_half_random)


class OutageLog:
    """The log of one server's outages: a warning when it is first found unreachable, one
    when it answers again, and only debug lines for the retries in between, so that a
    restart is two lines in a worker's log however many connections and readers retried.
    The layer's ``unreachable_since`` and ``outages`` are read from its servers' logs
    (``outages.earliest_outage``, ``outages.outages_begun``)."""

    __slots__ = ("_back", "count", "kind", "label", "logger", "since")

    def __init__(self, label: str, kind: str, logger: logging.Logger) -> None:
        #: the server, as shown in logs (password masked)
        self.label = label
        #: the kind of server, as shown in logs ("Redis", "RabbitMQ")
        self.kind = kind
        self.logger = logger
        #: ``time.monotonic()`` start of the current outage (None: reachable)
        self.since: float | None = None
        #: outages begun so far
        self.count = 0
        #: set when the server is reached again: ends the back-off pauses (:meth:`pause`)
        self._back: asyncio.Event | None = None

    def failed(self, exc: BaseException | str, what: str = "") -> None:
        where = f" ({what})" if what else ""
        if self.since is None:
            self.since = time.monotonic()
            self.count += 1
            self.logger.warning(
                "%s %s unreachable%s: %s; retrying with back-off", self.kind, self.label, where, exc
            )
        else:
            self.logger.debug("%s %s still unreachable%s: %s", self.kind, self.label, where, exc)

    def recovered(self) -> None:
        if self.since is not None:
            self.logger.warning(
                "%s %s reachable again after %.1f s",
                self.kind,
                self.label,
                time.monotonic() - self.since,
            )
            self.since = None
        if self._back is not None:
            self._back.set()
            self._back = None

    async def pause(self, delay: float, stop: asyncio.Event | None = None) -> None:
        """A back-off pause of ``delay`` seconds, cut short when another connection reaches
        the server again (so that every reader and the command queue are back together, not
        up to one back-off apart: a process that sends to a channel its reader does not read
        yet fills it), or when ``stop`` is set."""
        back = self._back
        if back is None:
            back = self._back = asyncio.Event()
        waits = [asyncio.ensure_future(back.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


class OutageRetry:
    """The pause of a reader that lost its connection: :func:`reconnect_backoff`, reset by
    the first success. Failures are reported to the server's :class:`OutageLog` (one line per
    outage, not one per retry), whose :meth:`OutageLog.pause` ends the wait early when another
    connection reaches the server again."""

    __slots__ = ("_delays", "_outage")

    def __init__(self, outage: OutageLog) -> None:
        self._outage = outage
        self._delays: Backoff | None = None

    def reset(self) -> None:
        """A success: the next failure pauses briefly again, and the outage (if any) ends."""
        if self._delays is not None:
            self._delays = None
            self._outage.recovered()

    async def wait(self, what: str, exc: BaseException) -> None:
        """Report the failure and pause until the next try, or until the server is back."""
        if self._delays is None:
            self._delays = reconnect_backoff()
        self._outage.failed(exc, what)
        await self._outage.pause(self._delays.pause())


class ServerReachability:
    """``unreachable_since`` and ``outages`` (see ``BaseChannelLayer``) of a layer that dials
    servers, read from the outage logs that its ``_outage_logs()`` lists: one per server
    connection, in every event loop. A mixin, placed before ``BaseChannelLayer``."""

    def _outage_logs(self) -> Iterable[OutageLog]:
        raise NotImplementedError

    @property
    def unreachable_since(self) -> float | None:
        return earliest_outage(self._outage_logs())

    @property
    def outages(self) -> int:
        return outages_begun(self._outage_logs())


class ExceptionMap:
    """A context manager that raises a backend's exceptions as towpath's: leaving the block
    with an exception of a class in ``mapping`` (pairs of backend classes and the towpath
    class to raise, first match wins) raises the towpath class instead, its message led by
    ``where`` and the original chained as its cause. towpath's own exceptions, and anything
    not listed (cancellation, a bug), leave unchanged. Stateless, so one instance serves
    every call of a layer (``with self.errors:``)."""

    __slots__ = ("mapping", "where")

    def __init__(
        self,
        mapping: Iterable[tuple[tuple[type[BaseException], ...], type[ChannelLayerError]]],
        where: str,
    ) -> None:
        self.mapping = tuple(mapping)
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ChannelLayerError) or not isinstance(exc, Exception):
            return
        for backend, ours in self.mapping:
            if isinstance(exc, backend):
                raise ours(f"{self.where}: {type(exc).__name__}: {exc}") from exc


class WithMailbox(Protocol):
    """A loop's state that holds the local mailbox its readers fill."""

    @property
    def mailbox(self) -> Mailbox[Any]: ...  # pragma: no cover


M = TypeVar("M", bound=WithMailbox)


class MailboxReceiving(BaseChannelLayer, Generic[M, T]):
    """``receive`` and ``_receive`` (``receive_many``) of a layer whose readers put what they
    read into the running loop's :class:`~towpath.layers._mailbox.Mailbox`: take the next
    item (fairly between channels), else ask for more and wait. Nothing is taken before the
    ``return``, so a cancelled receive loses nothing. The layer provides:

    * ``_state()``: the running loop's state (``state.mailbox``);
    * ``_taken(state, channel, item)``: what an item just taken means (decode it; release a
      ``!`` channel's backlog; acknowledge it), None when it is dropped (undecodable);
    * ``_fetch_now(state, names)`` (optional): the mailbox is empty; read at once what is
      there without waiting, returning one ``(channel, item)`` or None;
    * ``_wanted(state, names)`` (optional): receivers are about to wait on ``names``: make
      sure readers will fill the mailbox; an awaitable to await before looking again (an
      inbox to open, say), or None to wait on the mailbox.
    """

    def _state(self) -> M:
        raise NotImplementedError  # pragma: no cover

    def _taken(self, state: M, channel: str, item: T) -> Message | None:
        raise NotImplementedError  # pragma: no cover

    def _fetch_now(self, state: M, names: tuple[str, ...]) -> tuple[str, T] | None:
        return None

    def _wanted(self, state: M, names: tuple[str, ...]) -> Awaitable[object] | None:
        return None

    async def receive(self, channel: str) -> Message:
        # _receive's loop for one channel: one coroutine frame less to resume per message,
        # which the busiest path of a server notices
        require_valid_channel_name(channel, receive=True)
        if "!" in channel:
            self.require_own_channel(channel)
        state = self._state()
        mailbox: Mailbox[Any] = state.mailbox
        names = (channel,)
        while True:
            item = mailbox.pop_one(channel)
            if item is None:
                fetched = self._fetch_now(state, names)
                if fetched is not None:
                    item = fetched[1]
            if item is not None:
                message = self._taken(state, channel, item)
                if message is not None:
                    return message
                continue
            pending = self._wanted(state, names)
            if pending is not None:
                await pending
                continue
            await mailbox.wait(names)

    async def _receive(self, names: tuple[str, ...]) -> tuple[str, Message]:
        state = self._state()
        mailbox: Mailbox[Any] = state.mailbox
        while True:
            found = mailbox.pop(names)
            if found is None:
                found = self._fetch_now(state, names)
            if found is not None:
                channel, item = found
                message = self._taken(state, channel, item)
                if message is not None:
                    return channel, message
                continue
            pending = self._wanted(state, names)
            if pending is not None:
                await pending
                continue
            await mailbox.wait(names)
