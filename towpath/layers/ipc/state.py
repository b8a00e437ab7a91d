"""What one event loop holds in the IPC layer: its wake-up FIFO, open files, local mailbox."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from towpath.layers._mailbox import Mailbox
from towpath.layers.ipc.groups import GroupStore
from towpath.layers.ipc.queues import INBOX, NORMAL, QueueFile
from towpath.layers.ipc.store import Waker, sweep, unlink_quietly, wake_path

__all__ = ["LoopState"]

#: queue files of normal channels / other processes' inboxes one loop keeps open
_OPEN_FILES = 512
#: inboxes remembered as dead, so sends to them skip the failing open()
_DEAD_REMEMBERED = 4096


def full_pipe(pipe_size: int, page: int) -> int:
    """The fewest bytes a full pipe of wake-up lines can hold. Linux packs small writes into
    the pipe's last page while they fit and starts a new page when one does not, so with lines
    of at most 101 bytes (a channel name and a newline) every page but the last holds more than
    ``page - 128`` bytes when a write finds the pipe full."""
    return max(0, (pipe_size // page - 1) * (page - 128))


@dataclass(eq=False)
class LoopState:
    """Everything bound to one event loop."""

    directory: str
    #: names this loop: its FIFO is ``w-<token>``, its ``!`` channels ``x.<token>!y``
    token: bytes
    wake_fd: int
    pipe_size: int
    #: a read of this many bytes of wake-up lines or more means the pipe may have been full
    full_at: int
    mailbox: Mailbox[bytes]
    waker: Waker
    store: GroupStore
    #: normal channels' queue files
    queues: dict[str, QueueFile] = field(default_factory=dict)
    #: other processes' inboxes this loop sends to
    inboxes: dict[str, QueueFile] = field(default_factory=dict)
    #: inboxes this loop owns (its ``!`` channels)
    own: dict[str, QueueFile] = field(default_factory=dict)
    #: normal channels this loop holds a waiter slot in
    registered: set[str] = field(default_factory=set)
    #: normal channels whose waiter slots were all taken: looked at on a timer
    starved: set[str] = field(default_factory=set)
    poll: asyncio.TimerHandle | None = None
    #: own inbox -> {channel hash: messages its receives took (or that expired) since the
    #: backlog table was last lowered}; lowered at the end of the tick
    released: dict[str, dict[int, int]] = field(default_factory=dict)
    release_scheduled: bool = False
    #: inboxes found gone
    dead: set[str] = field(default_factory=set)
    hints: dict[str, bytes] = field(default_factory=dict)
    turn: int = 0
    next_sweep: float = 0.0
    closed: bool = False

    @classmethod
    def open(
        cls,
        directory: str,
        token: bytes,
        *,
        sweep_first: bool,
        on_expired: Callable[[LoopState, str, int], None],
        clock: Callable[[], float] = time.time,
    ) -> LoopState:
        """Make this loop's FIFO (and, for a layer's first loop, sweep the store). ``clock``
        (epoch seconds) is what the mailbox judges expiry by."""
        store = GroupStore(directory)
        path = wake_path(directory, token)
        try:
            with store.locked():  # a sweep never sees this FIFO between mkfifo and open
                unlink_quietly(path)
                os.mkfifo(path, 0o600)
                wake_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                if sweep_first:
                    sweep(directory)
        except BaseException:
            store.close()
            raise
        pipe_size = fcntl.fcntl(wake_fd, fcntl.F_GETPIPE_SZ)
        state = cls(
            directory=directory,
            token=token,
            wake_fd=wake_fd,
            pipe_size=pipe_size,
            full_at=full_pipe(pipe_size, os.sysconf("SC_PAGE_SIZE")),
            mailbox=Mailbox(clock),
            waker=Waker(directory),
            store=store,
        )
        state.mailbox.on_expired = lambda channel, count: on_expired(state, channel, count)
        return state

    def hint(self, channel: str) -> bytes:
        hint = self.hints.get(channel)
        if hint is None:
            hint = self.hints[channel] = channel.encode()
        return hint

    def queue(self, channel: str) -> QueueFile:
        """The queue file of a normal channel (made if new)."""
        queue = self.queues.get(channel)
        if queue is None:
            if len(self.queues) >= _OPEN_FILES:
                for name in list(self.queues):
                    if name not in self.registered and name not in self.starved:
                        self.queues.pop(name).close()
                        break
            opened = QueueFile.open(self.directory, channel, NORMAL, create=True)
            assert opened is not None  # created
            queue = self.queues[channel] = opened
        return queue

    def inbox(self, inbox: str) -> QueueFile | None:
        """Another loop's inbox; None when it is gone."""
        queue = self.inboxes.get(inbox)
        if queue is None:
            if inbox in self.dead:
                return None
            queue = QueueFile.open(self.directory, inbox, INBOX, create=False)
            if queue is None:
                self.forget_inbox(inbox)
                return None
            if len(self.inboxes) >= _OPEN_FILES:
                self.inboxes.pop(next(iter(self.inboxes))).close()
            self.inboxes[inbox] = queue
        return queue

    def forget_inbox(self, inbox: str) -> None:
        """``inbox``'s owner is gone: close it and remember so."""
        queue = self.inboxes.pop(inbox, None)
        if queue is not None:
            queue.close()
        if len(self.dead) >= _DEAD_REMEMBERED:
            self.dead.clear()
        self.dead.add(inbox)

    def own_inbox(self, queue: QueueFile) -> None:
        self.own[queue.name] = queue
        self.dead.discard(queue.name)
        other = self.inboxes.pop(queue.name, None)
        if other is not None:
            other.close()

    def release(self) -> None:
        """Close every file and the FIFO (whose path goes too)."""
        self.closed = True
        for queue in (*self.queues.values(), *self.inboxes.values(), *self.own.values()):
            queue.close()
        self.queues.clear()
        self.inboxes.clear()
        self.own.clear()
        self.waker.close()
        os.close(self.wake_fd)
        unlink_quietly(wake_path(self.directory, self.token))
        self.store.close()

    def abandon(self) -> object:
        """In a child process after ``fork()``: close the parent's descriptors without
        unlocking anything (the locks are the parent's). Returns what must stay referenced."""
        self.closed = True
        for queue in (*self.queues.values(), *self.inboxes.values(), *self.own.values()):
            with contextlib.suppress(OSError):
                os.close(queue.fd)
        for fd in (*self.waker.fds.values(), self.wake_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return self.store.abandon()
