"""The two kinds of file lock the IPC layer uses, and the test hook inside critical sections.

* ``flock`` (whole file, exclusive) guards every change to a queue file and, on the store's
  ``lock`` file, every group operation. The kernel releases it when the last descriptor of the
  open file goes away, which a SIGKILL does: a process killed while holding it blocks no one.
* An open-file-description lock (``F_OFD_SETLK``, Linux ≥ 3.15) on byte 0 of an inbox file marks
  its owner alive for as long as the owner keeps the file open. Senders ask the kernel whether
  it is still held (``F_OFD_GETLK``); no pid files, no heartbeats, no stale pids. OFD locks,
  unlike ``lockf``, belong to the open file and not to the process, so two layer instances in
  one process exclude each other, and closing an unrelated descriptor releases nothing.
  ``flock`` and OFD locks on the same file are independent of each other on Linux.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable

__all__ = [
    "checkpoint",
    "hold_owner_lock",
    "lock",
    "owner_alive",
    "set_checkpoint_hook",
    "unlock",
]

# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (0 for OFD locks), with the C padding written out.
_FLOCK = struct.Struct("=hh4xqqi4x")
_OWNER_RANGE = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)

_hook: Callable[[str], None] | None = None


def set_checkpoint_hook(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(label)`` at each checkpoint inside a critical section (tests only: a hook
    that blocks lets a test SIGKILL a process while it holds a lock)."""
    global _hook
    _hook = hook


def checkpoint(label: str) -> None:
    """A named point inside a critical section, where a test hook may run."""
    if _hook is not None:
        _hook(label)


def lock(fd: int, label: str) -> None:
    """Take the exclusive ``flock`` of ``fd`` (blocking; every holder keeps it for
    microseconds, and the kernel drops it with a dead holder)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    if _hook is not None:
        _hook(label)


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def hold_owner_lock(fd: int) -> bool:
    """Take the owner lock of an inbox file for as long as ``fd`` stays open; False when
    another live open file holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _OWNER_RANGE)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def owner_alive(fd: int) -> bool:
    """Whether another open file (the owner) holds the owner lock of ``fd``'s file."""
    answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _OWNER_RANGE)
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)
