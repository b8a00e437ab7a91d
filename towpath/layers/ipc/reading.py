"""The IPC layer's reading side: what a receive takes from the queue files, and the reader
that wakes up when a sender writes to this process's FIFO.

Nothing read here can stop it: a record that does not name channels of its inbox, or whose data
the serializer refuses (``core.py``), is dropped, counted in ``stats.undecodable`` and logged
once per queue per burst (``towpath/layers/_readers.py``); a record that runs past the end of
its queue (no towpath process writes one) is dropped with every record after it, which cannot
be framed, and the queue goes on with what is sent next. An unexpected exception in the reader
is logged with its traceback and its work done again after a back-off pause
(``stats.reader_restarts``), so receivers never wait on a reader that stopped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable

from towpath.layers._readers import ReaderGuard, inbox_channels
from towpath.layers.base import LayerStats, non_local_name
from towpath.layers.ipc.queues import QueueFile
from towpath.layers.ipc.state import LoopState

__all__ = ["POLL_INTERVAL", "Readers"]

logger = logging.getLogger("towpath.layers.ipc")

#: how often a receiver whose channel had no free waiter slot looks again (s)
POLL_INTERVAL = 0.05


class Readers:
    """Mixed into ``IPCChannelLayer``, which provides the attributes and methods declared
    here."""

    path: str
    expiry: float
    clock: Callable[[], float]
    stats: LayerStats
    _guard: ReaderGuard

    def _claim(self, state: LoopState, inbox: str) -> QueueFile:  # pragma: no cover
        raise NotImplementedError

    def _release(self, state: LoopState, channel: str, count: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _fetch_now(self, state: LoopState, names: tuple[str, ...]) -> tuple[str, bytes] | None:
        """Nothing local for a receive: read the queue files it names. Own inboxes are
        drained (into the mailbox); from normal channels one message is taken, channels in
        turns. When there is none, this loop registers as a waiter of each normal channel in
        the same critical section that found it empty."""
        now = self.clock()
        if now >= state.next_sweep:
            state.next_sweep = now + self.expiry
            state.mailbox.sweep(now)
        normal: list[str] = []
        for name in names:
            if "!" not in name:
                normal.append(name)
            elif non_local_name(name) not in state.own:
                # Own inboxes need no look here: a sender wakes their reader (_on_wake).
                self._drain(state, self._claim(state, non_local_name(name)), now)
                found = state.mailbox.pop(names)
                if found is not None:
                    return found
        if not normal:
            return None
        if len(normal) > 1:
            start = state.turn % len(normal)
            state.turn += 1
            normal = normal[start:] + normal[:start]
        token = state.token
        for register in (False, True):
            for channel in normal:
                queue = state.queue(channel)
                taken, expired, holds = queue.take(
                    1, now, token, wait_if_short=register, others=self._demand(state, channel) > 0
                )
                self._unframed(queue)
                self._registration(state, channel, queue, holds)
                if expired:
                    self.stats.expired += expired
                if taken:
                    return channel, taken[0][1]
        return None

    @staticmethod
    def _demand(state: LoopState, channel: str) -> int:
        """Receivers of this loop waiting on ``channel`` and not yet served."""
        waiters = state.mailbox.waiters.get(channel)
        if not waiters:
            return 0
        return sum(1 for waiter in waiters if not waiter.done()) - state.mailbox.length(channel)

    def _registration(self, state: LoopState, channel: str, queue: QueueFile, holds: bool) -> None:
        if queue.slot >= 0:
            state.registered.add(channel)
            state.starved.discard(channel)
        else:
            state.registered.discard(channel)
            if holds:
                state.starved.discard(channel)
            else:
                if channel not in state.starved:
                    logger.warning(
                        "all waiter slots of channel %r are taken: this process looks at it "
                        "every %.0f ms instead of being woken",
                        channel,
                        POLL_INTERVAL * 1000,
                    )
                state.starved.add(channel)
                if state.poll is None:
                    state.poll = asyncio.get_running_loop().call_later(
                        POLL_INTERVAL, self._poll, state
                    )

    def _poll(self, state: LoopState) -> None:
        state.poll = None
        if not state.closed:
            self._service(state, None)

    def _recover(self, state: LoopState) -> bool:
        """After the reader failed (see :meth:`_service`): look at every channel waited on."""
        if state.closed:
            return False
        self._serve(state, None)
        return True

    def _drain(self, state: LoopState, queue: QueueFile, now: float) -> None:
        """Move everything in an own inbox into the mailbox. A record that does not name
        channels of this inbox (no towpath process wrote it) is dropped as undecodable; the
        channels of this inbox it names leave their backlog, as if it had been received."""
        records, expired = queue.drain(now)
        self._unframed(queue)
        if expired:
            self.stats.expired += expired
        if not records:
            return
        put = state.mailbox.put
        bad, first = 0, b""
        for names, expires_at, data in records:
            channels, foreign = inbox_channels(names, queue.name)
            if foreign or not channels:
                if not bad:
                    first = names
                bad += 1
                for channel in channels:
                    self._release(state, channel, 1)
                continue
            for channel in channels:
                put(channel, expires_at, data)
        if bad:
            reason = f"its channels are not all of this inbox ({queue.name})"
            self._guard.dropped(self._reader_of(queue.name), reason, first, bad)

    def _unframed(self, queue: QueueFile) -> None:
        """Report the records ``queue`` dropped because they could not be framed."""
        if queue.discarded:
            reason = "a record running past the end of the queue, and every record after it"
            self._guard.dropped(self._reader_of(queue.name), reason, None, queue.discarded)
            queue.discarded = 0

    def _reader_of(self, channel: str) -> str:
        """What read ``channel``'s messages (a ``!`` channel's inbox file, or the queue file of
        a normal channel), as logged."""
        if "!" in channel:
            return f"the IPC inbox {non_local_name(channel)!r} in {self.path}"
        return f"the IPC queue {channel!r} in {self.path}"

    def _on_wake(self, state: LoopState) -> None:
        """The FIFO is readable: read every wake-up line, then look at what they name. A
        sender whose line did not fit (a full pipe) wrote none, so when this read found as
        much as a full pipe can hold, every channel waited on is looked at instead."""
        chunks: list[bytes] = []
        total, size = 0, state.pipe_size
        while True:
            try:
                chunk = os.read(state.wake_fd, size)
            except BlockingIOError:
                break
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < size:
                break  # a line written after this read leaves the FIFO readable: we run again
        if state.closed:
            return
        if total >= state.full_at:
            self._service(state, None)
        else:
            self._service(state, set(b"".join(chunks).split(b"\n")))

    def _service(self, state: LoopState, hints: set[bytes] | None) -> None:
        """The reader's work after a wake-up (or a poll): :meth:`_serve`. An unexpected
        exception there (a bug) must not leave receivers waiting with nobody to wake them: it
        is logged with its traceback and the work done again after a back-off pause."""
        try:
            self._serve(state, hints)
        except Exception as exc:
            self._guard.crashed(
                f"IPC reader of {self.path}", exc, functools.partial(self._recover, state)
            )

    def _serve(self, state: LoopState, hints: set[bytes] | None) -> None:
        now = self.clock()
        if now >= state.next_sweep:
            state.next_sweep = now + self.expiry
            state.mailbox.sweep(now)
        if hints is None or b"!" in hints:
            for queue in list(state.own.values()):
                self._drain(state, queue, now)
        channels = state.registered | state.starved if state.starved else state.registered
        if not channels:
            return
        mailbox, token = state.mailbox, state.token
        for channel in list(channels):
            if hints is not None and state.hint(channel) not in hints:
                continue
            queue = state.queue(channel)
            demand = self._demand(state, channel)
            taken, expired, holds = queue.take(
                max(demand, 0), now, token, wait_if_short=True, others=False
            )
            self._unframed(queue)
            self._registration(state, channel, queue, holds)
            if expired:
                self.stats.expired += expired
            for expires_at, data in taken:
                mailbox.put(channel, expires_at, data)
        if state.starved and state.poll is None and not state.closed:
            state.poll = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._poll, state)
