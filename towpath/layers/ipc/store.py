"""The store directory: where it is, who may use it, the wake-up FIFOs, and the sweep.

One directory per ``prefix`` (``/dev/shm/towpath-ipc-<prefix>``) holds everything the
processes of one application share; it is private to the user that made it (mode 0700), so no
other local user can read or inject messages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

from towpath.layers.base import InvalidChannelLayerError
from towpath.layers.ipc.queues import INBOX, QueueFile

__all__ = [
    "Waker",
    "default_directory",
    "prepare_directory",
    "require_directory",
    "sweep",
    "unlink_quietly",
    "wake_path",
]

#: FIFOs of other processes one loop keeps open (least recently opened are closed first)
_OPEN_FIFOS = 512


def default_directory() -> str:
    """``/dev/shm`` (memory, no disk) where it exists, else the temporary directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def require_directory(directory: str) -> None:
    """The ``directory`` setting must name an existing directory: the store is made inside it,
    never its missing parents (a typo would otherwise put a private store where no other
    process of the application looks)."""
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            state, fix = "is not a directory", "set directory= to a directory"
        else:
            state, fix = (
                "does not exist",
                f"create it (mkdir -p {directory}) or set directory= to one",
            )
        raise InvalidChannelLayerError(
            f"IPC layer: directory={directory!r} {state}; the store is made inside an existing "
            f"directory: {fix}, the same in every process (default /dev/shm)"
        )


def prepare_directory(path: str) -> None:
    """Make (or check) the store directory: a directory, owned by this user, mode 0700. Its
    parent (the ``directory`` setting) must exist."""
    require_directory(os.path.dirname(path))
    try:
        os.mkdir(path, mode=0o700)
    except FileExistsError:
        pass  # something that is not a directory: said below
    except OSError as exc:
        raise InvalidChannelLayerError(
            f"cannot make the IPC store directory {path} ({exc.strerror}); set directory= "
            "to a writable directory, the same in every process"
        ) from exc
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidChannelLayerError(
            f"the IPC store {path} is not a directory; remove it or choose another prefix"
        )
    if info.st_uid != os.getuid():
        raise InvalidChannelLayerError(
            f"the IPC store {path} belongs to uid {info.st_uid}, not to this user "
            f"({os.getuid()}); choose another prefix or directory"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)


def wake_path(directory: str, token: bytes) -> str:
    """The wake-up FIFO of the event loop whose token is ``token``."""
    return os.path.join(directory, "w-" + token.decode())


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sweep(directory: str) -> None:
    """Remove what killed processes left: FIFOs nobody reads, inboxes nobody owns. Run under
    the store's lock (a FIFO is made and opened under it too, so never looks abandoned)."""
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith("w-"):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    unlink_quietly(path)
        elif name.startswith("i-"):
            queue = QueueFile.open(directory, name[2:], INBOX, create=False)
            if queue is not None:
                try:
                    queue.owner_gone()
                finally:
                    queue.close()


class Waker:
    """Writes wake-up lines to other event loops' FIFOs, keeping them open. Called as
    ``waker(token, line)``; returns False when the FIFO's reader is gone."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fds: dict[bytes, int] = {}

    def __call__(self, token: bytes, hint: bytes) -> bool:
        fd = self.fds.get(token)
        if fd is None:
            path = wake_path(self.directory, token)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # a FIFO nobody reads: its owner is dead
                    unlink_quietly(path)
                    return False
                if exc.errno == errno.ENOENT:
                    return False
                raise
            if len(self.fds) >= _OPEN_FIFOS:
                os.close(self.fds.pop(next(iter(self.fds))))
            self.fds[token] = fd
        try:
            os.write(fd, hint)  # at most 101 bytes: one atomic pipe write
        except BlockingIOError:
            pass  # its pipe is full: the reader will find it so and look at everything
        except BrokenPipeError:
            os.close(self.fds.pop(token))
            unlink_quietly(wake_path(self.directory, token))
            return False
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
