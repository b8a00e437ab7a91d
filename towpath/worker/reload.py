"""``towpath runserver --reload``: a supervisor process that restarts runserver on code changes.

The parent process never imports the project. It binds the listening socket once (or takes the
``--fd`` it was given), runs the real ``runserver`` as a child with ``--fd`` pointing at that
socket, and polls the modification times of the ``*.py`` files under the watched directories.
When one changes, appears or disappears, it stops the child with SIGTERM (the child drains as
on any SIGTERM; SIGKILL only after its graceful period) and starts a new one. Because the parent
holds the socket, the port stays the same across restarts (also with ``-p 0``) and connections
that arrive in between wait in the listen backlog for the next child instead of being refused.

A child that exits on its own (a syntax error, a routing that does not import) is reported and
restarted on the next change. SIGTERM or SIGINT to the parent stops the child and exits 0; a
second one while the child drains is forwarded, which makes the child cut what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import click

__all__ = ["Reloader", "child_args", "listening_socket", "scan", "snapshot_changes"]

logger = logging.getLogger("towpath.reload")

#: directory names never watched (besides hidden ones, starting with ``.``)
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})

#: a file's identity for change detection: mtime in ns, size, inode (an editor that saves by
#: renaming a new file over the old one changes the inode even within one mtime tick)
Stamp = tuple[int, int, int]

_PR_SET_PDEATHSIG = 1


def _skip_dir(path: str, name: str) -> bool:
    if name.startswith(".") or name in SKIPPED_DIRS:
        return True
    # a virtualenv under another name than .venv
    return os.path.exists(os.path.join(path, name, "pyvenv.cfg"))


def iter_py_files(dirs: Iterable[Path]) -> Iterator[str]:
    """The ``*.py`` files under ``dirs``, skipping hidden directories, ``__pycache__`` and
    virtualenvs; each file once even when directories overlap."""
    seen: set[str] = set()
    for top in dirs:
        for path, subdirs, files in os.walk(top):
            subdirs[:] = [name for name in subdirs if not _skip_dir(path, name)]
            for name in files:
                if name.endswith(".py") and not name.startswith("."):
                    full = os.path.join(path, name)
                    if full not in seen:
                        seen.add(full)
                        yield full


def scan(dirs: Iterable[Path]) -> dict[str, Stamp]:
    """One poll: every watched file with its stamp."""
    stamps: dict[str, Stamp] = {}
    for name in iter_py_files(dirs):
        try:
            stat = os.stat(name)
        except OSError:  # removed while walking
            continue
        stamps[name] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return stamps


def snapshot_changes(old: dict[str, Stamp], new: dict[str, Stamp]) -> list[str]:
    """The files changed, added or removed between two scans, sorted."""
    changed = {name for name, stamp in new.items() if old.get(name) != stamp}
    changed.update(name for name in old if name not in new)
    return sorted(changed)


def child_args(ctx: click.Context, skip: Iterable[str]) -> list[str]:
    """The command line that gives ``ctx.command`` the values it was given, minus the
    parameters named in ``skip``. Built from the parsed values rather than ``sys.argv``, so
    values that came from ``TOWPATH_*`` variables or defaults carry over explicitly too."""
    skipped = set(skip)
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None or name in skipped:
            continue
        value = ctx.params.get(name)
        if value is None:
            continue
        long = [opt for opt in param.opts if opt.startswith("--")] or param.opts
        option = long[0]
        if param.is_flag and not param.count:
            if param.secondary_opts:
                args.append(option if value else param.secondary_opts[0])
            elif value:
                args.append(option)
            continue
        values = value if param.multiple else (value,)
        for item in values:
            args += [option, str(item)]
    return args


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port), inheritable by children."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the child gets SIGTERM when the reloader dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class Reloader:
    """Run ``command`` as a child and restart it when a ``*.py`` file under ``dirs`` changes.

    ``stop_timeout``: seconds a child may take after SIGTERM before it is killed. ``pass_fds``
    are inherited by every child (the listening socket). :meth:`run` returns the exit status.
    """

    def __init__(
        self,
        command: Sequence[str],
        dirs: Sequence[Path],
        *,
        delay: float = 0.25,
        stop_timeout: float = 30.0,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
        scan_files: Callable[[Iterable[Path]], dict[str, Stamp]] = scan,
    ) -> None:
        self.command = list(command)
        self.dirs = list(dirs)
        self.delay = delay
        self.stop_timeout = stop_timeout
        self.pass_fds = tuple(pass_fds)
        self.env = env
        self._scan = scan_files
        self.child: subprocess.Popen[bytes] | None = None
        self._child_fd: int | None = None
        self._signals = 0
        self._seen_signals = 0
        self._wakeup_r = -1

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Watch and restart until SIGTERM/SIGINT; returns 0 then."""
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        self._wakeup_r = wakeup_r
        previous_fd = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._loop()
        finally:
            try:
                if self.child is not None and self.child.poll() is None:
                    self._stop_child()
            finally:
                self._forget_child()
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                signal.set_wakeup_fd(previous_fd)
                os.close(wakeup_r)
                os.close(wakeup_w)

    def _loop(self) -> int:
        names = ", ".join(str(path) for path in self.dirs)
        logger.info("reloader (pid %d) watching *.py under %s", os.getpid(), names)
        stamps = self._scan(self.dirs)
        self._start_child()
        while True:
            self._wait(self.delay)
            if self._signals:
                logger.info("reloader stopping")
                return 0
            child = self.child
            if child is not None and child.poll() is not None:
                logger.warning(
                    "runserver (pid %d) exited with status %d; restarting it on the next change",
                    child.pid,
                    child.returncode,
                )
                self._forget_child()
            fresh = self._scan(self.dirs)
            changes = snapshot_changes(stamps, fresh)
            if not changes:
                continue
            stamps = fresh
            shown = ", ".join(os.path.relpath(name) for name in changes[:3])
            more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
            logger.info("changes in %s%s; reloading", shown, more)
            if self.child is not None:
                self._stop_child()
                self._forget_child()
            if self._signals:
                logger.info("reloader stopping")
                return 0
            self._start_child()

    # -- the child -----------------------------------------------------------------------------

    def _start_child(self) -> None:
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        self.child = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            pass_fds=self.pass_fds,
            env=self.env,
            # its own process group: a terminal's Ctrl-C reaches the reloader only, which then
            # sends the child one SIGTERM (two signals would make it cut its drain short)
            process_group=0,
            **kwargs,
        )
        self._child_fd = None
        with contextlib.suppress(AttributeError, OSError):
            self._child_fd = os.pidfd_open(self.child.pid)
        logger.info("started runserver (pid %d)", self.child.pid)

    def _forget_child(self) -> None:
        if self._child_fd is not None:
            os.close(self._child_fd)
            self._child_fd = None
        self.child = None

    def _stop_child(self) -> None:
        """SIGTERM, wait up to ``stop_timeout`` (forwarding a further signal, which forces the
        child), then SIGKILL."""
        child = self.child
        assert child is not None
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        self._seen_signals = self._signals
        deadline = time.monotonic() + self.stop_timeout
        while child.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "runserver (pid %d) still running %g s after SIGTERM; killing it",
                    child.pid,
                    self.stop_timeout,
                )
                child.kill()
                child.wait()
                break
            self._wait(min(left, 0.5))
            if self._signals != self._seen_signals:
                self._seen_signals = self._signals
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    # -- waiting -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less when a signal arrives or the child exits."""
        fds = [self._wakeup_r]
        if self._child_fd is not None:
            fds.append(self._child_fd)
        with contextlib.suppress(InterruptedError):
            select.select(fds, [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_r, 512):
                pass
